"""What every command shares: the parser that turns usage errors into the JSON/exit convention, and the
output (text, or one JSON value with ``--json``)."""

from __future__ import annotations

import argparse
import json
import math
import sys

from ..errors import InvalidInput, PlatformError


class Parser(argparse.ArgumentParser):
    def error(self, message):  # usage errors follow the same JSON/exit convention
        raise InvalidInput(f"{self.prog}: {message}", field="arguments")


def finite(value):
    """``value`` with NaN and infinities as None, in any dict, list or tuple: ``json.dumps`` writes them as
    ``NaN`` and ``Infinity``, which is not JSON (a reader such as ``jq`` refuses the whole answer)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def emit(args, value, text: str | None = None) -> None:
    if getattr(args, "json", False):
        print(json.dumps(finite(value), default=str))
    else:
        print(text if text is not None else json.dumps(finite(value), indent=2, default=str))


def fail(e: PlatformError, as_json: bool) -> int:
    if as_json:
        print(json.dumps(e.to_json()))
    print(f"error: {e.message}", file=sys.stderr)
    return 2


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr)
