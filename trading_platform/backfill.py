"""``tp backfill``: an asset backfill over a symbol's history.

It creates a Dagster *asset* backfill (what the UI's "Materialize partitions" creates) of
``predictions``, ``forecasts`` and ``patterns`` (or of the market data, ``market``: every OHLCV
asset, and ``features``) over the symbol-months of the date range;
the daemon runs it under the assets' backfill policy (up to 24 symbol-months per run,
``dagster job backfill`` would ignore it). The model versions are pinned when the backfill
is created, one per model and role, and every chunk uses them (``prediction_pins``, keyed by
the backfill id), whatever moves in the registry meanwhile.

Months before the market's first month are history asked for: they are recorded as its start
(``extend_history``) and become ``month`` partitions when the code location next loads. Until
it has, the daemon does not know them and would fail the backfill: ``reload_code_location``
in the result says when a reload is due first.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import date, datetime, timezone

from .errors import InvalidInput

log = logging.getLogger(__name__)
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


def validate(store, symbol: str, start: date, end: date, assets: tuple[str, ...]) -> tuple:
    """(the symbol's info, the months to fill) or the error naming what is wrong: checked before anything
    loads Dagster or MLflow, so a mistyped symbol is answered at once."""
    info = store.require_symbol(symbol)
    unknown = [a for a in assets if a not in OUTPUTS + DATA]
    if unknown or not assets:
        raise InvalidInput(f"unknown asset(s) {', '.join(unknown) or '(none given)'}; backfillable: "
                           f"{', '.join(OUTPUTS + DATA)}", field="assets")
    from .core.months import month_key

    current = month_key(datetime.now(timezone.utc))  # the last month partition
    months = [m for m in months_between(start, end) if m <= current]
    if not months:
        raise InvalidInput(f"no month between {start} and {end} has begun yet (the last is {current[:7]})",
                           field="from")
    return info, months


def create_backfill(instance, store, client, symbol: str, start: date, end: date,
                    assets: tuple[str, ...] = OUTPUTS) -> dict:
    info, months = validate(store, symbol, start, end, assets)
    from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
    from dagster._core.execution.backfill import PartitionBackfill
    from dagster._core.utils import make_new_backfill_id

    from .assets.partitions import market_key, market_partitions_from, month_partitions_from, store_first_month
    from .models import scoring

    outputs = tuple(a for a in assets if a in OUTPUTS)
    if info.symbol not in instance.get_dynamic_partitions("symbol"):
        raise InvalidInput(f"{symbol!r} has no partition yet (the symbols sensor adds it; or `tp symbols add`)",
                           field="symbol")
    # months before the market's first one are history asked for: recorded, they are partitions from the code
    # location's next load on; the backfill is built on the partitions as that load will have them
    was = store_first_month(store)
    store.extend_history(months[0])
    first = store_first_month(store)
    if first < was:
        log.warning("the months from %s to before %s are new history: they are partitions once the code location "
                    "reloads (Dagster UI: Deployment > Reload; or restart `tp up` / the code server). Reload before "
                    "the daemon picks this backfill up: it fails a backfill of partitions it does not know",
                    first[:7], was[:7])
    keys = [str(market_key(info.symbol, m)) for m in months]
    market = market_partitions_from(month_partitions_from(first))
    target = AssetGraphSubset(partitions_subsets_by_asset_key={
        key: market.empty_subset().with_partition_keys(keys) for key in asset_keys(assets)})
    backfill_id = make_new_backfill_id()
    backfill = PartitionBackfill.from_asset_graph_subset(
        backfill_id=backfill_id, asset_graph_subset=target, backfill_timestamp=time.time(),
        tags={"tp/run_kind": "backfill"}, dynamic_partitions_store=instance,
        title=f"{', '.join(assets)}: {info.symbol} {months[0][:7]}..{months[-1][:7]}",
        description="created by tp backfill" + ("; model versions pinned in prediction_pins" if outputs else ""),
        run_config=None)
    # the versions are pinned before the daemon can see the backfill (only outputs read models)
    versions = scoring.pinned_for(store, client, backfill_id, tuple(scoring.FAMILY_TABLE)) if outputs else {}
    instance.add_backfill(backfill)
    return {"backfill_id": backfill_id, "symbol": info.symbol, "months": [m[:7] for m in months],
            "assets": list(assets), "partitions": len(keys), "runs_at_most": math.ceil(len(keys) / 24) * len(assets),
            "pinned": scoring.pins(versions) if outputs else {}, "created_at": datetime.now(timezone.utc).isoformat(),
            "first_month": first[:7], "reload_code_location": first < was}
