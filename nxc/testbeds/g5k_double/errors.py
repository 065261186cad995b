"""An API error: an HTTP status and the text/plain body the real API would send."""

from __future__ import annotations

FORBIDDEN = "You are not authorized to access this resource"


class ApiError(Exception):
    def __init__(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.headers = headers or {}


def not_found(text: str) -> ApiError:
    return ApiError(404, text)


def bad_request(text: str) -> ApiError:
    return ApiError(400, text)


def forbidden(text: str = FORBIDDEN) -> ApiError:
    return ApiError(403, text)


def oar_refused(status: int, path: str, message: str) -> ApiError:
    """An error the API relays from OAR, wrapped as the API wraps it."""
    return ApiError(status, f"Request to {path} failed with status {status}: {message}")
