"""Resolve the market store DSN: TP_DATABASE_URL, or the embedded server (embedded mode only)."""

from __future__ import annotations

from ..errors import InvalidInput
from ..settings import Settings, get_settings


def database_url(settings: Settings | None = None) -> str:
    """TP_DATABASE_URL; without it, the embedded server under $TP_HOME/pg, started if need be. Not
    embedded (production), nothing is ever started here: a missing TP_DATABASE_URL is an error naming it."""
    s = settings or get_settings()
    if s.database_url:
        return s.database_url
    if not s.embedded:
        raise InvalidInput(
            f"TP_DATABASE_URL is not set and the platform is not embedded ({s.mode_reason}): set it to the market "
            "store's DSN (postgresql://USER:PASSWORD@HOST:5432/trading); in production the platform never starts "
            "an embedded PostgreSQL", field="TP_DATABASE_URL")
    from .embedded import ensure_embedded

    return ensure_embedded(s.pg_data)


def open_store(settings: Settings | None = None, dsn: str | None = None):
    from .db import connect

    return connect(dsn or database_url(settings))
