"""Numbers from the user (command-line options, environment variables, spec files): one reading for all.

``float()`` and ``int()`` take more than a user means: ``0_1`` is 1, Arabic-Indic digits are digits,
``1e400`` is infinity and ``nan`` is a number. Text here is plain decimal (``12``, ``-0.5``, ``2.5e1``),
finite, and within the bounds the caller gives; a failure is ``InvalidInput`` naming the field.
"""

from __future__ import annotations

import math
import re

from ..errors import InvalidInput

_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)
_INTEGER = re.compile(r"[+-]?\d+", re.ASCII)


def _show(value) -> str:
    """The value as the message quotes it: its repr, cut to 40 characters (a 400-digit number)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def interval(low=None, high=None, low_open: bool = False, high_open: bool = False) -> str:
    """The bounds as a message says them: `` in [1, 36500]``, `` in (0, 1]``, `` >= 1``, `` < 5`` or ``""``."""
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high:g}"
    return ""


def _span(low, high, above) -> str:
    if above is not None:
        return f"greater than {above:g}" + (f" and at most {high:g}" if high is not None else "")
    if low is not None and high is not None:
        return f"from {low:g} to {high:g}"
    if low is not None:
        return f"at least {low:g}"
    return f"at most {high:g}" if high is not None else "finite"


def read(value, integer: bool = False):
    """``value`` as a finite float (an int with ``integer``), or None when it is not one: booleans, text that is
    not plain decimal (``0_1``, ``nan``, ``1e400``, other scripts' digits), and for ``integer`` any float, are
    not numbers here; neither is an int too large for a float."""
    if isinstance(value, bool) or (integer and isinstance(value, float)):
        return None
    if isinstance(value, str):
        if not (_INTEGER if integer else _DECIMAL).fullmatch(value.strip()):
            return None
        value = value.strip()
    try:
        x = int(value) if integer else float(value)
        if not math.isfinite(x):  # an int too large for a float raises OverflowError here
            return None
    except (TypeError, ValueError, OverflowError):
        return None
    return x


def within(x, low=None, high=None, above=None, below=None) -> bool:
    """Whether ``x`` is in [low, high], > above and < below (a bound left out when None)."""
    return not ((low is not None and x < low) or (high is not None and x > high)
                or (above is not None and x <= above) or (below is not None and x >= below))


def number(value, field: str, label: str | None = None, *, low: float | None = None, high: float | None = None,
           above: float | None = None) -> float:
    """``value`` (a number or its plain decimal text) as a finite float within [low, high] and > above."""
    x = read(value)
    if x is None or not within(x, low, high, above):
        raise InvalidInput(f"{label or field} must be a number {_span(low, high, above)}, got {_show(value)}",
                           field=field)
    return x


def integer(value, field: str, label: str | None = None, *, low: int | None = None,
            high: int | None = None) -> int:
    """``value`` (an int, or plain integer text) within [low, high]; floats, even whole ones, are refused."""
    n = read(value, integer=True)
    if n is None or not within(n, low, high):
        span = _span(low, high, None)
        raise InvalidInput(f"{label or field} must be an integer{'' if span == 'finite' else ' ' + span}, "
                           f"got {_show(value)}", field=field)
    return n
