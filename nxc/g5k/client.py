"""Calls into python-grid5000, with every failure turned into a one-line G5kError."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import requests
from grid5000.exceptions import Grid5000AuthenticationError, Grid5000Error

from nxc.g5k.errors import CredentialsError, G5kApiError

T = TypeVar("T")
ALREADY_KILLED = "This job was already killed"


def one_line(text: object, limit: int = 300) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def call(what: str, action: Callable[[], T]) -> T:
    """Run ``action``; on failure raise a G5kError that starts with ``what``."""
    try:
        return action()
    except Grid5000AuthenticationError:
        raise CredentialsError(
            f"{what}: the Grid'5000 API refused the credentials (401): check user and password"
        ) from None
    except Grid5000Error as exc:
        message = one_line(exc.error_message)
        status = exc.response_code
        raise G5kApiError(f"{what}: {status}: {message}", status, message) from None
    except requests.exceptions.RetryError as exc:
        raise G5kApiError(f"{what}: the API kept failing after retries ({one_line(exc)})") from None
    except requests.exceptions.RequestException as exc:
        raise G5kApiError(
            f"{what}: cannot reach the Grid'5000 API ({type(exc).__name__}: {one_line(exc)})"
        ) from None
