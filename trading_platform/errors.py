"""Errors that name the field or value at fault.

Every entry point (CLI, config, sources, sensors) raises one of these for bad
input, so the CLI can print ``{"error": ..., "field": ...}`` and exit non-zero.
"""

from __future__ import annotations

import re

# a password in a URI (scheme://user:PASSWORD@host) or a key=value DSN (password=PASSWORD)
_URI_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)[^@\s]*@")
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('[^']*'|[^\s,;]+)", re.I)
# a Telegram bot token: in a Bot API path (/bot<id>:<secret>/...) or on its own (<digits>:<30+ characters>)
_BOT_PATH = re.compile(r"(/bot)[0-9]+:[A-Za-z0-9_\-]+")
_BOT_TOKEN = re.compile(r"\b[0-9]{6,}:[A-Za-z0-9_\-]{30,}")
# the value of a query parameter whose name says it holds a secret (?token=..., &api_key=..., &sig=...)
_QUERY_SECRET = re.compile(
    r"([?&;](?:[A-Za-z0-9_.\-]*[_.\-])?(?:token|key|secret|signature|sig|password|passwd|pwd|api_key|apikey|"
    r"access_token|auth|authorization|code)=)[^&#\s\"'<>]+", re.I)
# what follows a webhook path segment (n8n's /webhook/<id> and /webhook-test/<id>, Discord's /api/webhooks/<id>/
# <token>, /hooks/<token>): the path of a webhook URL is its credential
_WEBHOOK_PATH = re.compile(r"(/(?:webhook|webhook-test|webhooks|hooks)/)[^\s?#\"'<>]+", re.I)
# a URL on a hooks.* host (Slack's https://hooks.slack.com/services/T../B../<secret>): its whole path
_HOOKS_HOST = re.compile(r"(\bhttps?://hooks\.[^/\s\"'<>]+/)[^\s?#\"'<>]+", re.I)


def redact_secrets(text: str) -> str:
    """``text`` with every secret it may quote replaced by ``***``: the password of a URI or DSN (database
    URLs, MLflow tracking URIs, webhook URLs with credentials), a Telegram bot token (``/bot<token>/`` in a
    Bot API URL, or on its own), the values of query parameters named like secrets (``token``, ``key``,
    ``secret``, ``signature``, ``sig``, ``password``, ``api_key``, ``access_token``, ``auth``...) and the path
    of a webhook URL after ``/webhook/``, ``/webhook-test/`` (n8n), ``/webhooks/`` or ``/hooks/`` (the path of
    such a URL is its credential)."""
    text = _URI_PASSWORD.sub(r"\1***@", text)
    text = _KV_PASSWORD.sub(r"\1***", text)
    text = _BOT_PATH.sub(r"\1***", text)
    text = _BOT_TOKEN.sub("***", text)
    text = _QUERY_SECRET.sub(r"\1***", text)
    text = _HOOKS_HOST.sub(r"\1***", text)
    return _WEBHOOK_PATH.sub(r"\1***", text)


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
