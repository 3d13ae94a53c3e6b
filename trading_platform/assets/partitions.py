"""Partitions shared by the market-data assets: symbol (dynamic) x month.

``symbol`` mirrors the ``symbols`` table (kept in step by the CLI/API and by
the ``symbol_partitions_sensor``). ``month`` runs from TP_HISTORY_START to the
current month included (``end_offset=1``), so schedules have a partition to
target while the month is still running.
"""

from __future__ import annotations

import warnings

from dagster import (
    BackfillPolicy,
    DynamicPartitionsDefinition,
    MonthlyPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
)

from ..core.months import month_bounds, month_key  # noqa: F401 (re-exported for the assets)
from ..settings import HISTORY_START

try:  # backfill_policy is marked beta in Dagster 1.13; it is the documented way to bound backfills
    from dagster import BetaWarning

    warnings.filterwarnings("ignore", category=BetaWarning, message=".*backfill_policy.*")
except ImportError:  # pragma: no cover
    pass

symbol_partitions = DynamicPartitionsDefinition(name="symbol")
month_partitions = MonthlyPartitionsDefinition(start_date=HISTORY_START, end_offset=1)
market_partitions = MultiPartitionsDefinition({"month": month_partitions, "symbol": symbol_partitions})
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
