"""``tp backfill``: an asset backfill over a symbol's history.

It creates a Dagster *asset* backfill (what the UI's "Materialize partitions" creates) of
``predictions``, ``forecasts`` and ``patterns`` (or of the market data, ``market``: every OHLCV
asset, and ``features``) over the symbol-months of the date range;
the daemon runs it under the assets' backfill policy (up to 24 symbol-months per run,
``dagster job backfill`` would ignore it). The model versions are pinned when the backfill
is created, one per model and role, and every chunk uses them (``prediction_pins``, keyed by
the backfill id), whatever moves in the registry meanwhile.
"""

from __future__ import annotations

import math
import time
from datetime import date, datetime, timezone

from .errors import InvalidInput

OUTPUTS = ("predictions", "forecasts", "patterns")
DATA = ("market", "features")  # market: the OHLCV asset and every resampled timeframe


def asset_keys(assets: tuple[str, ...]) -> list:
    from dagster import AssetKey

    from .assets.features import FEATURES_KEY
    from .assets.market_data import market_assets

    keys = []
    for a in assets:
        if a == "market":
            keys += [k for asset in market_assets for k in asset.keys]
        else:
            keys.append(FEATURES_KEY if a == "features" else AssetKey(a))
    return keys


def months_between(start: date, end: date) -> list[str]:
    if end < start:
        raise InvalidInput(f"--to {end} is before --from {start}", field="to")
    out, y, m = [], start.year, start.month
    while (y, m) <= (end.year, end.month):
        out.append(f"{y:04d}-{m:02d}-01")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def create_backfill(instance, store, client, symbol: str, start: date, end: date,
                    assets: tuple[str, ...] = OUTPUTS) -> dict:
    from dagster._core.execution.backfill import PartitionBackfill
    from dagster._core.utils import make_new_backfill_id

    from .assets.partitions import market_key, market_partitions
    from .definitions import defs
    from .models import scoring

    info = store.require_symbol(symbol)
    unknown = [a for a in assets if a not in OUTPUTS + DATA]
    if unknown or not assets:
        raise InvalidInput(f"unknown asset(s) {', '.join(unknown) or '(none given)'}; backfillable: "
                           f"{', '.join(OUTPUTS + DATA)}", field="assets")
    outputs = tuple(a for a in assets if a in OUTPUTS)
    first = market_partitions.get_partitions_def_for_dimension("month").get_first_partition_key()
    months = [m for m in months_between(start, end) if m >= first]
    if not months:
        raise InvalidInput(f"no month between {start} and {end} is on or after TP_HISTORY_START ({first})",
                           field="from")
    if info.symbol not in instance.get_dynamic_partitions("symbol"):
        raise InvalidInput(f"{symbol!r} has no partition yet (the symbols sensor adds it; or `tp symbols add`)",
                           field="symbol")
    keys = [str(market_key(info.symbol, m)) for m in months]
    backfill_id = make_new_backfill_id()
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=backfill_id, asset_graph=defs.get_repository_def().asset_graph, partition_names=keys,
        asset_selection=asset_keys(assets), backfill_timestamp=time.time(),
        tags={"tp/run_kind": "backfill"}, dynamic_partitions_store=instance, all_partitions=False,
        title=f"{', '.join(assets)}: {info.symbol} {months[0][:7]}..{months[-1][:7]}",
        description="created by tp backfill" + ("; model versions pinned in prediction_pins" if outputs else ""),
        run_config=None)
    # the versions are pinned before the daemon can see the backfill (only outputs read models)
    versions = scoring.pinned_for(store, client, backfill_id, tuple(scoring.FAMILY_TABLE)) if outputs else {}
    instance.add_backfill(backfill)
    return {"backfill_id": backfill_id, "symbol": info.symbol, "months": [m[:7] for m in months],
            "assets": list(assets), "partitions": len(keys), "runs_at_most": math.ceil(len(keys) / 24) * len(assets),
            "pinned": scoring.pins(versions) if outputs else {}, "created_at": datetime.now(timezone.utc).isoformat()}
