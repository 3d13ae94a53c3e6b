"""Partitions shared by the market-data assets: symbol (dynamic) x month.

``symbol`` mirrors the ``symbols`` table (kept in step by the CLI/API and by
the ``symbol_partitions_sensor``). ``month`` runs from the market's first month
(``load_first_month``) to the current month included (``end_offset=1``), so
schedules have a partition to target while the month is still running.

The first month is decided when the code location loads; Dagster loads it again
on every reload (UI: Deployment > Reload, a restart of ``tp up`` or of the code
server), which is when history stored or asked for since shows as partitions.
"""

from __future__ import annotations

import json
import logging
import warnings
from datetime import datetime, timezone

from dagster import (
    BackfillPolicy,
    DynamicPartitionsDefinition,
    MonthlyPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
)

from ..core.months import month_bounds, month_key  # noqa: F401 (re-exported for the assets)
from ..errors import redact_secrets
from ..settings import DEFAULT_HISTORY_START, configured_history_start, get_settings

try:  # backfill_policy is marked beta in Dagster 1.13; it is the documented way to bound backfills
    from dagster import BetaWarning

    warnings.filterwarnings("ignore", category=BetaWarning, message=".*backfill_policy.*")
except ImportError:  # pragma: no cover
    pass

log = logging.getLogger(__name__)
READ_TIMEOUT_S = 2  # connecting and reading, each: a load never waits longer on an unreachable store
COPY_FILE = "history_start.json"  # under $TP_HOME: the last first month read, for a load that cannot read it


def first_month(recorded: str | None) -> str:
    """The first month of the partitions given the store's recorded one (None: no history, or not known):
    the earlier of it and ``TP_HISTORY_START``; neither known, ``TP_HISTORY_START``'s default (2018-01).
    Never after the current month."""
    known = [m for m in (recorded, configured_history_start()) if m]
    return min(min(known) if known else DEFAULT_HISTORY_START, month_key(datetime.now(timezone.utc)))


def store_first_month(store) -> str:
    """The first month the code location will have at its next load, from an open ``MarketStore``."""
    return first_month(store.history_start())


def load_first_month() -> str:
    """The first month of the ``month`` partitions for this load of the code location ('YYYY-MM-01').

    - With ``TP_DATABASE_URL`` (production, and every process ``tp up`` starts: the code server, the daemon,
      the runs): that store's first month (``tp_history_start()``: the oldest month stored, or asked for
      by ``tp backfill``; none before the store is migrated), read with a short timeout and never starting
      anything. When it cannot be read (unreachable): the copy under ``$TP_HOME`` that the last load
      reading the same database kept, if any; a warning says so.
    - ``TP_HISTORY_START`` moves it earlier.
    - Nothing known (no ``TP_DATABASE_URL``: the embedded mode's CLI, scripts and tests; or a store with no
      history yet, a fresh install): ``TP_HISTORY_START``, else 2018-01. Wide rather than the current month:
      a process that materializes in-process (``tp demo``, a script's ``materialize``) or a code location
      loaded before the first data must accept the months that work asks for; the load after the data has
      arrived starts where it does.
    """
    settings = get_settings()
    if not settings.database_url:
        return first_month(None)
    copy, database = settings.home / COPY_FILE, redact_secrets(settings.database_url)
    try:
        recorded = _read_recorded(settings.database_url)
    except Exception as e:  # a load never fails on it: the store's own errors reach the runs that use it
        recorded = _read_copy(copy, database)
        reason = redact_secrets(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
        log.warning("the month partitions' first month could not be read from the market store (%s); using %s",
                    reason, f"{recorded[:7]}, kept in {copy}" if recorded else "TP_HISTORY_START or 2018-01")
        return first_month(recorded)
    _keep_copy(copy, database, recorded)
    return first_month(recorded)


def _read_recorded(dsn: str) -> str | None:
    # its own short-timeout connection, not store.db.connect: store.db loads pandas and pyarrow (0.5 s), which
    # every code-location load (each run's process) would pay; store.history is light
    import psycopg

    from ..store.history import history_start

    with psycopg.connect(dsn, autocommit=True, connect_timeout=READ_TIMEOUT_S) as conn:
        conn.execute(f"SET statement_timeout = '{READ_TIMEOUT_S}s'")
        try:
            return history_start(conn)
        except psycopg.errors.UndefinedFunction:  # not migrated yet (a new database, or before `tp db migrate`)
            log.debug("the market store has no tp_history_start() yet: its history is not known")
            return None


def _read_copy(path, database: str) -> str | None:
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return saved.get("first_month") if isinstance(saved, dict) and saved.get("database") == database else None


def _keep_copy(path, database: str, recorded: str | None) -> None:
    """Keep what was read for a later load that cannot read it (only in an existing $TP_HOME: a load
    creates no directory)."""
    text = json.dumps({"database": database, "first_month": recorded})
    try:
        if path.parent.is_dir() and (not path.exists() or path.read_text() != text):
            path.write_text(text)
    except OSError as e:
        log.debug("could not keep the first month in %s: %s", path, e)


def month_partitions_from(first: str) -> MonthlyPartitionsDefinition:
    return MonthlyPartitionsDefinition(start_date=first, end_offset=1)


def market_partitions_from(months: MonthlyPartitionsDefinition) -> MultiPartitionsDefinition:
    return MultiPartitionsDefinition({"month": months, "symbol": symbol_partitions})


symbol_partitions = DynamicPartitionsDefinition(name="symbol")
month_partitions = month_partitions_from(load_first_month())
market_partitions = market_partitions_from(month_partitions)
# a backfill over years runs in bounded runs: up to 24 symbol-months per run
market_backfill_policy = BackfillPolicy.multi_run(max_partitions_per_run=24)


def market_key(symbol: str, month: str) -> MultiPartitionKey:
    return MultiPartitionKey({"symbol": symbol, "month": month})


def split_keys(keys) -> dict[str, list[str]]:
    """symbol -> sorted months, from the partition keys of a run."""
    out: dict[str, set[str]] = {}
    for k in keys:
        kd = k.keys_by_dimension if isinstance(k, MultiPartitionKey) else market_partitions.get_partition_key_from_str(k).keys_by_dimension
        out.setdefault(kd["symbol"], set()).add(kd["month"])
    return {s: sorted(m) for s, m in sorted(out.items())}
