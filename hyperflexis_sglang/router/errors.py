"""OpenAI-style error objects: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import orjson
from starlette.responses import Response

# HTTP status -> OpenAI error type
TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
         405: "invalid_request_error", 408: "timeout_error", 413: "invalid_request_error",
         415: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error",
         500: "internal_error", 502: "upstream_error", 503: "service_unavailable", 504: "timeout_error"}


class RouterHTTPError(Exception):
    """An error the router answers itself (never forwarded to a worker)."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    def response(self, request_id: str | None = None) -> Response:
        headers = dict(self.headers)
        if request_id:
            headers["x-request-id"] = request_id
        return error_response(self.status, self.message, self.param, self.code, headers)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": TYPES.get(status, "invalid_request_error"),
                                   "param": param, "code": code if code is not None else status}})


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: dict | None = None) -> Response:
    return Response(error_body(status, message, param, code), status_code=status,
                    media_type="application/json", headers=headers)


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> RouterHTTPError:
    return RouterHTTPError(400, message, param, code)


def sse_error(message: str, code: str = "upstream_error") -> bytes:
    """An error event ending a stream whose status line (200) was already sent."""
    return b"data: " + orjson.dumps({"error": {"message": message, "type": "upstream_error", "param": None,
                                               "code": code}}) + b"\n\ndata: [DONE]\n\n"
