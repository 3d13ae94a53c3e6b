"""The market store as a Dagster resource."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

from dagster import ConfigurableResource
from pydantic import Field

_DSN_CACHE: dict[str, str] = {}
_MIGRATED: set[str] = set()


class MarketDB(ConfigurableResource):
    """PostgreSQL market store.

    ``database_url`` comes from ``TP_DATABASE_URL`` (through ``EnvVar``, so the
    UI shows the variable's name, never the password); when it is empty the
    embedded server under ``home`` (``$TP_HOME``) is started or reused.
    """

    database_url: Optional[str] = Field(default=None, description="DSN; empty = embedded server")
    home: Optional[str] = Field(default=None, description="TP_HOME for the embedded server")

    def dsn(self) -> str:
        if self.database_url:
            return self.database_url
        from ..settings import get_settings
        from ..store.embedded import ensure_embedded

        settings = get_settings()
        home = self.home or str(settings.home)
        if home not in _DSN_CACHE:
            from pathlib import Path

            _DSN_CACHE[home] = ensure_embedded(Path(home) / "pg")
        return _DSN_CACHE[home]

    @contextmanager
    def open(self) -> Iterator["MarketStore"]:  # noqa: F821
        from ..store.db import connect

        dsn = self.dsn()
        store = connect(dsn, run_migrations=dsn not in _MIGRATED)
        _MIGRATED.add(dsn)
        try:
            yield store
        finally:
            store.close()
