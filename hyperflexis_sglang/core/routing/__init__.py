"""Instance selection (routing and P/D pairing); pure."""

from .policies import ROUTERS, RoutingPolicy, UnknownRouter, make_router
from .prefix import PrefixTracker
from .types import InstanceView, RouteDecision, RouteRequest, RoutingError

__all__ = ["ROUTERS", "RoutingPolicy", "UnknownRouter", "make_router", "PrefixTracker", "InstanceView",
           "RouteDecision", "RouteRequest", "RoutingError"]
