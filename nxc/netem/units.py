"""Strict parsing of the quantities a topology is written in.

One spelling per quantity, no guessing:

* duration: a non-negative decimal number immediately followed by ``us``, ``ms`` or ``s``
  (``250us``, ``50ms``, ``1.5s``). No space, no sign, no bare number (``50`` could be
  seconds or milliseconds), no ``usec``/``msec``/``sec``. Resolution is one microsecond
  (``0.5us`` is refused); at most 1000 s.
* rate: a positive decimal number immediately followed by ``bit``, ``kbit``, ``mbit``,
  ``gbit`` or ``tbit`` (bits per second, powers of 1000; the unit is case-insensitive, so
  ``100Mbit`` is fine). ``bps``/``kbps``/``mbps``… are refused: tc reads them as *bytes*
  per second while most people mean bits, so the spelling is ambiguous. The value must
  be a whole number of bits per second, at least 8bit.
* percentage: a decimal number from 0 to 100 immediately followed by ``%`` (``0.5%``,
  ``100%``). A bare fraction (``0.5``) is refused: it could mean 0.5 % or 50 %.

Parsers return integers in base units (microseconds, bits per second) or a float percent,
and raise :class:`UnitError` whose message is the tail of a one-line error
(``'50 ms' is not a duration (e.g. 50ms)``); the caller prefixes where the value was.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

MAX_DURATION_US = 1000 * 1_000_000

_NUMBER = r"(?:0|[1-9][0-9]*)(?:\.[0-9]+)?"
_DURATION = re.compile(rf"^({_NUMBER})(us|ms|s)$")
_RATE = re.compile(rf"^({_NUMBER})(bit|kbit|mbit|gbit|tbit)$", re.IGNORECASE)
_PERCENT = re.compile(rf"^({_NUMBER})%$")
_BYTES_RATE = re.compile(rf"^{_NUMBER}[kmgt]?bps$", re.IGNORECASE)

_DURATION_FACTOR = {"us": 1, "ms": 1_000, "s": 1_000_000}
_RATE_FACTOR = {
    "bit": 1,
    "kbit": 1_000,
    "mbit": 1_000_000,
    "gbit": 1_000_000_000,
    "tbit": 1_000_000_000_000,
}


class UnitError(ValueError):
    """A value is not written the way this module accepts; the message says why."""


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:  # pragma: no cover - the regexes only let numbers through
        raise UnitError(f"{text!r} is not a number") from None


def parse_duration(value: object) -> int:
    """``'50ms'`` → 50000 (microseconds)."""
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise UnitError(f"{value!r} is not a duration (e.g. 50ms)")
    micros = _decimal(match.group(1)) * _DURATION_FACTOR[match.group(2)]
    if micros != micros.to_integral_value():
        raise UnitError(f"{value!r} is finer than the 1us resolution")
    if micros > MAX_DURATION_US:
        raise UnitError(f"{value!r} is longer than 1000s")
    return int(micros)


def parse_rate(value: object) -> int:
    """``'100mbit'`` → 100000000 (bits per second)."""
    if isinstance(value, str) and _BYTES_RATE.match(value):
        raise UnitError(
            f"{value!r} is ambiguous (tc reads 'bps' as bytes per second): "
            "write the rate in bits, e.g. 100mbit"
        )
    match = _RATE.match(value) if isinstance(value, str) else None
    if match is None:
        raise UnitError(f"{value!r} is not a rate (e.g. 100mbit)")
    bits = _decimal(match.group(1)) * _RATE_FACTOR[match.group(2).lower()]
    if bits != bits.to_integral_value():
        raise UnitError(f"{value!r} is not a whole number of bits per second")
    if bits < 8:
        raise UnitError(f"{value!r} is below the smallest rate, 8bit")
    return int(bits)


def parse_percent(value: object) -> float:
    """``'0.5%'`` → 0.5 (percent, from 0 to 100)."""
    match = _PERCENT.match(value) if isinstance(value, str) else None
    if match is None:
        raise UnitError(f"{value!r} is not a percentage (e.g. 0.5%)")
    percent = _decimal(match.group(1))
    if percent > 100:
        raise UnitError(f"{value!r} is more than 100%")
    return float(percent)


def format_duration(micros: int) -> str:
    """Shortest exact spelling: 50000 → ``'50ms'``, 1500000 → ``'1.5s'``, 250 → ``'250us'``."""
    if micros >= 1_000_000:
        return _trim(Decimal(micros) / 1_000_000) + "s"
    if micros >= 1_000:
        return _trim(Decimal(micros) / 1_000) + "ms"
    return f"{micros}us"


def format_rate(bits: int) -> str:
    """Shortest exact spelling: 100000000 → ``'100mbit'``, 1500 → ``'1.5kbit'``."""
    for unit in ("tbit", "gbit", "mbit", "kbit"):
        factor = _RATE_FACTOR[unit]
        if bits >= factor:
            return _trim(Decimal(bits) / factor) + unit
    return f"{bits}bit"


def format_percent(percent: float) -> str:
    """``0.5`` → ``'0.5%'``; at most six decimals (tc's precision is finer than that)."""
    text = f"{percent:.6f}".rstrip("0").rstrip(".")
    return f"{text}%"


def _trim(number: Decimal) -> str:
    text = format(number.normalize(), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
