"""Errors that name the field or value at fault.

Every entry point (CLI, config, sources, sensors) raises one of these for bad
input, so the CLI can print ``{"error": ..., "field": ...}`` and exit non-zero.
"""

from __future__ import annotations

import re

# a password in a URI (scheme://user:PASSWORD@host) or a key=value DSN (password=PASSWORD)
_URI_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)[^@\s]*@")
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('[^']*'|[^\s,;]+)", re.I)


def redact_secrets(text: str) -> str:
    """``text`` with every password of a URI or DSN replaced by ``***`` (database URLs, MLflow
    tracking URIs, webhook URLs with credentials)."""
    return _KV_PASSWORD.sub(r"\1***", _URI_PASSWORD.sub(r"\1***@", text))



class PlatformError(Exception):
    """Base class: a message for a person and the name of the field at fault."""

    def __init__(self, message: str, field: str | None = None):
        message = redact_secrets(message)  # whatever a message quotes, a password never shows
        super().__init__(message)
        self.message = message
        self.field = field

    def to_json(self) -> dict:
        return {"error": self.message, "field": self.field}


class InvalidInput(PlatformError, ValueError):
    """A value given by the user (argument, file, config) is not acceptable."""


class UnknownSymbol(PlatformError, LookupError):
    """A partition, event or write names a symbol that is not in `symbols`."""

    def __init__(self, symbol: str):
        super().__init__(
            f"symbol {symbol!r} is not in the symbols table; add it first "
            f"(tp symbols add {symbol!r})",
            field="symbol",
        )
        self.symbol = symbol


class StoreUnavailable(PlatformError, ConnectionError):
    """The market store cannot be reached. The message names host, never password."""


class SourceUnavailable(PlatformError, ConnectionError):
    """A market-data source (and every fallback) failed."""
