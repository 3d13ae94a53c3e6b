"""Resolve the market store DSN: TP_DATABASE_URL, or the embedded server."""

from __future__ import annotations

from ..settings import Settings, get_settings


def database_url(settings: Settings | None = None) -> str:
    s = settings or get_settings()
    if s.database_url:
        return s.database_url
    from .embedded import ensure_embedded

    return ensure_embedded(s.pg_data)


def open_store(settings: Settings | None = None, dsn: str | None = None):
    from .db import connect

    return connect(dsn or database_url(settings))
