"""The market store as a Dagster resource."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

from dagster import ConfigurableResource
from pydantic import Field

_DSN_CACHE: dict[str, str] = {}
_MIGRATED: set[str] = set()
BACKGROUND_KINDS = ("retrain", "backfill", "rag")
DEFAULT_BACKGROUND_NICE = 10


def background_nice(tags: dict) -> int:
    """The CPU niceness a run's steps take: ``TP_BACKGROUND_NICE`` (default 10; 0 turns it off) for
    backfill runs (``dagster/backfill``), retraining and the knowledge-base sync (``tp/run_kind: retrain``,
    ``rag``), 0 for the rest. Live
    runs keep the normal priority, so on a small machine a backfill yields the CPU to them instead of
    sharing it equally (their latency during a backfill, see benchmarks/live_latency.py)."""
    import os

    if not (tags.get("dagster/backfill") or tags.get("tp/run_kind") in BACKGROUND_KINDS):
        return 0
    raw = os.environ.get("TP_BACKGROUND_NICE", str(DEFAULT_BACKGROUND_NICE)).strip()
    if not raw.isdigit() or int(raw) > 19:
        from ..errors import InvalidInput

        raise InvalidInput(f"TP_BACKGROUND_NICE={raw!r} is not a niceness from 0 to 19", field="TP_BACKGROUND_NICE")
    return int(raw)


def lower_priority_for(tags: dict) -> int:
    """Raise this process's niceness to ``background_nice(tags)`` (never lower it); returns the niceness."""
    import os

    want = background_nice(tags)
    now = os.nice(0)
    return os.nice(want - now) if want > now else now


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
        from dataclasses import replace
        from pathlib import Path

        from ..settings import get_settings
        from ..store.runtime import database_url

        settings = get_settings()
        if self.home:
            settings = replace(settings, home=Path(self.home).expanduser().resolve())
        key = str(settings.home)
        if key not in _DSN_CACHE:  # not embedded (production), this raises naming TP_DATABASE_URL
            _DSN_CACHE[key] = database_url(settings)
        return _DSN_CACHE[key]

    def setup_for_execution(self, context) -> None:
        # every step of a backfill or a retraining opens the store: the one place to yield the CPU to live runs
        run = getattr(context, "run", None)
        if run is not None:
            lower_priority_for(run.tags or {})

    @contextmanager
    def open(self) -> Iterator["MarketStore"]:  # noqa: F821
        from ..store.db import connect

        dsn = self.dsn()
        # the first open in a process migrates (embedded) or checks the schema version (production: migrations
        # are a deploy step, never a side effect of a run); later ones do neither
        first = dsn not in _MIGRATED
        store = connect(dsn, run_migrations=None if first else False, check_schema=first)
        _MIGRATED.add(dsn)
        try:
            yield store
        finally:
            store.close()
