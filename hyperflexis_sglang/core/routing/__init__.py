"""Instance selection (routing and P/D pairing) and router admission; pure."""

from .admission import DISPATCH, HOLD, REJECT, Admission, AdmissionInput, decide, queue_key
from .manual import HTTP_ROUTERS, ManualRouting, make_http_router
from .policies import ROUTERS, RoutingPolicy, UnknownRouter, make_router
from .prefix import PrefixTracker
from .types import InstanceView, RouteDecision, RouteRequest, RoutingError

__all__ = ["ROUTERS", "RoutingPolicy", "UnknownRouter", "make_router", "PrefixTracker", "InstanceView",
           "RouteDecision", "RouteRequest", "RoutingError", "HTTP_ROUTERS", "ManualRouting", "make_http_router",
           "DISPATCH", "HOLD", "REJECT", "Admission", "AdmissionInput", "decide", "queue_key"]
