"""`tp demo`: load the sample market and materialize everything for its latest stretch.

Runs in-process on the local Dagster instance (so the runs show in the UI), one
``market_data_job`` run per symbol over its months, steps one at a time.

The sample is the synthetic market (``sources/synthetic.py``), which plants the
structure each model family looks for; every model trains through the same gate a
user's run goes through. ``control=True`` loads its control instead (random walks
with the same calendars and volatility): there no family should earn a champion,
and the summary's ``champions`` says which did.
"""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta, timezone

from .errors import InvalidInput

SAMPLE = [
    ("BTC/USDT", {"category": "crypto", "exchange": "binance", "timeframes": ["5m", "15m", "1h", "4h", "1d"]}),
    ("EURUSD=X", {"category": "forex", "timeframes": ["1h", "4h", "1d"]}),
    ("ETH/USDT", {"category": "crypto", "exchange": "binance", "timeframes": ["5m", "15m", "1h", "4h", "1d"]}),
    ("AAPL", {"category": "stock", "exchange": "NASDAQ", "timeframes": ["1h", "4h", "1d"]}),
]


QUICK_MIN_DAYS = 14
# the sample market starts on 2018-01-01 (``sources/synthetic.py``'s ORIGIN): the first day a full demo has its four
# months of candles before it
FIRST_DAY = date(2018, 5, 1)


def demo_day(as_of: date | None = None, today: date | None = None) -> datetime:
    """The midnight (UTC) the demo's candles end at: the start of ``as_of`` (default today). The demo's months and
    every candle it loads are those before it, so a demo run as of the same day on the same seed trains on the
    same candles, whenever it runs. A day after today (its candles have not closed) or before the sample's
    four months start is refused."""
    today = today or datetime.now(timezone.utc).date()
    day = as_of or today
    if not isinstance(day, date) or isinstance(day, datetime):
        raise InvalidInput(f"the demo's day must be a date (YYYY-MM-DD), not {day!r}", field="as_of")
    if day > today:
        raise InvalidInput(f"the demo's day {day.isoformat()} is after today ({today.isoformat()}, UTC): its "
                           "candles have not closed", field="as_of")
    if day < FIRST_DAY:
        raise InvalidInput(f"the demo's day {day.isoformat()} is before {FIRST_DAY.isoformat()}: the sample market "
                           "starts on 2018-01-01 and the demo trains on four months of it", field="as_of")
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


def demo_plan(quick: bool, now: datetime | None = None) -> tuple[list[str], list[str]]:
    """(symbols, months): the months end with the one that holds the demo's last candle (the day before ``now``'s:
    the candles end at its midnight), so on the 1st of a month it is the month before, never an empty one;
    quick = 2 symbols x that month (and the one before while it holds under two weeks of candles: the models need
    about two weeks of hourly candles); full = 4 symbols x 4 months."""
    from .assets.partitions import month_key

    now = now or datetime.now(timezone.utc)
    last = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)  # the last candle's day
    n_months = (1 if last.day >= QUICK_MIN_DAYS else 2) if quick else 4
    months = []
    y, m = last.year, last.month
    for _ in range(n_months):
        months.append(month_key(datetime(y, m, 1, tzinfo=timezone.utc)))
        y, m = (y - 1, 12) if m == 1 else (y, m - 1)
    symbols = [s for s, _ in SAMPLE[: 2 if quick else 4]]
    return symbols, sorted(months)


def _check_nothing_after(store, symbols: list[str], day: datetime) -> None:
    """A demo as of ``day`` loads only the candles before it, but keeps what the store holds: candles of the
    sample's symbols from ``day`` on (an earlier demo, ``tp up``'s first start) would be trained on. Refused,
    naming them: the same day gives the same market on a deployment that holds nothing after it."""
    rows = store.conn.execute("SELECT symbol, max(ts) FROM ohlcv WHERE symbol = ANY(%s) AND ts >= %s GROUP BY 1 "
                              "ORDER BY 1", (symbols, day)).fetchall()
    if rows:
        held = ", ".join(f"{s} up to {t.astimezone(timezone.utc):%Y-%m-%d %H:%M}" for s, t in rows)
        raise InvalidInput(f"the store already holds candles from {day:%Y-%m-%d} on ({held}): a demo as of that day "
                           "would train on them; run it on a deployment that holds none (another TP_HOME)",
                           field="as_of")


def bound_job(job, assets: list, resources: dict, loggers: dict | None = None):
    """A named job of the code location bound to the given resources: the demo's runs belong to the
    job a user finds in the UI, not to ``__ephemeral_asset_job__``."""
    from dagster import Definitions

    return Definitions(assets=assets, jobs=[job], resources=resources, loggers=loggers).resolve_job_def(job.name)


# how a model asset's refusal to train for want of evidence ends (its Failure's description)
REFUSED = "nothing was registered"


def console_without_refusals(instance) -> tuple[dict, dict]:
    """(the jobs' loggers, the run config's ``loggers``): Dagster's console logger at the instance's level,
    less the records of a model's refusal to train for want of evidence (its step's and its run's failure,
    each printed with a stack trace). On the control and the quick sample that refusal is an expected
    outcome, which the demo prints as one line (``skipped: <reason>``); every other record, other errors
    included, is printed as before, and the run's event log in the UI keeps them all. Both halves are
    needed: Dagster uses a job's logger only when the run config names it."""
    import logging

    from dagster import colored_console_logger, logger

    @logger(config_schema=colored_console_logger.config_schema,
            description="the console logger, less the records of an expected refusal to train")
    def console(init_context):
        log = colored_console_logger.logger_fn(init_context)
        log.addFilter(lambda r: r.levelno < logging.ERROR or REFUSED not in r.getMessage())
        return log

    level = instance.python_log_level or "DEBUG"  # Dagster's own default when the instance names none
    return {"console": console}, {"loggers": {"console": {"config": {"log_level": level}}}}


def data_job(resources: dict):
    """``market_data_job`` (ingestion, resampling, features) bound to the given resources."""
    from .assets.features import feature_assets
    from .assets.market_data import market_assets
    from .sensors.market_data import market_data_job

    return bound_job(market_data_job, [*market_assets, *feature_assets], resources)


def run_demo(quick: bool = False, seed: int = 7, log=print, control: bool = False, as_of: date | None = None) -> dict:
    """Load and materialize the sample; the summary's ``failed`` names every step that failed (a data
    run, a failing error check, a model that did not train), empty when all went well. ``champions``
    maps each model family to the models the gate made champion, with the evidence. ``as_of``: the day the
    demo is run as of (default today; see ``demo_day``)."""
    from dagster import DagsterEventType

    from .assets.partitions import market_key
    from .instance import get_instance
    from .sensors.market_data import batch_assets
    from .resources import MarketDB, MarketSource
    from .store.db import candle_counts, connect
    from .store.features import count_rows
    from .store.runtime import database_url
    from .symbols import Symbols

    day = demo_day(as_of)  # checked before anything is loaded
    t0 = time.perf_counter()
    instance = get_instance()
    dsn = database_url()
    symbols, months = demo_plan(quick, now=day)
    with connect(dsn) as store:
        if as_of is not None:
            _check_nothing_after(store, symbols, day)
        api = Symbols(store, instance)
        for sym, fields in SAMPLE:
            if sym in symbols:
                api.add(sym, exist_ok=True, **fields)
    spec = f"{'control' if control else 'synthetic'}:{seed}"
    job = data_job({"market_db": MarketDB(database_url=dsn), "market_source": MarketSource(spec=spec)})
    per_asset: dict[str, float] = {}
    checks_failed, runs, failed = [], [], []
    for sym in symbols:
        log(f"materializing {sym} for {months[0][:7]}..{months[-1][:7]}")
        tags = {
            "dagster/asset_partition_range_start": str(market_key(sym, months[0])),
            "dagster/asset_partition_range_end": str(market_key(sym, months[-1])),
            "trading_platform/demo": ("quick" if quick else "full") + (" control" if control else ""),
        }
        with connect(dsn) as store:
            selection = batch_assets(store.require_symbol(sym))  # only the timeframes the symbol lists
        # the sample ends at the start of the demo's day (UTC): a demo run twice as of a day trains on the same candles
        until = day.isoformat()
        result = job.execute_in_process(instance=instance, tags=tags, asset_selection=selection,
                                        raise_on_error=False,
                                        run_config={"ops": {"market__ohlcv": {"config": {"until": until}}}})
        runs.append(result.run_id)
        if not result.success:
            failed.append(f"{job.name} for {sym} (run {result.run_id})")
            log(f"the {job.name} run for {sym} failed; see run {result.run_id} in the Dagster UI")
        starts = {}
        for rec in instance.all_logs(result.run_id, of_type={DagsterEventType.STEP_START,
                                                             DagsterEventType.STEP_SUCCESS}):
            ev = rec.dagster_event
            if ev.event_type == DagsterEventType.STEP_START:
                starts[ev.step_key] = rec.timestamp
            elif ev.step_key in starts:
                name = ev.step_key.replace("__", "/")
                per_asset[name] = per_asset.get(name, 0.0) + rec.timestamp - starts[ev.step_key]
        for ev in result.all_events:
            if ev.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
                data = ev.event_specific_data
                if not data.passed and data.severity.value == "ERROR":
                    checks_failed.append(f"{data.asset_key.to_user_string()}:{data.check_name}")
    models = _train_models(instance, dsn, symbols, months, quick, log, control)
    rag = _knowledge_base(instance, dsn, months[-1], log)
    if not rag.get("success"):
        failed.append(f"knowledge base (run {rag.get('run_id')})")
    paper = _paper(instance, dsn, symbols, months, quick, log, day)
    if paper.get("error"):
        failed.append(f"paper backtest ({paper['error'][:200]})")
    failed += [f"check {c}" for c in checks_failed]
    failed += [f"model {label}" for label, r in models.items() if not r.get("success")]
    with connect(dsn) as store:
        rows = candle_counts(store.conn, symbols)
        feature_rows = count_rows(store.conn, symbols)
    return {
        "quick": quick,
        "control": control,
        "as_of": day.date().isoformat(),
        "source": spec,
        "symbols": symbols,
        "months": months,
        "runs": runs,
        "asset_seconds": {k: round(v, 2) for k, v in sorted(per_asset.items())},
        "stored_candles": {tf: int(n) for tf, n in rows},
        "feature_rows": int(feature_rows),
        "models": models,
        "champions": champions(models),
        "knowledge_base": rag,
        "paper": paper,
        "error_checks_failed": checks_failed,
        "failed": failed,
        "total_seconds": round(time.perf_counter() - t0, 2),
    }


def _train_models(instance, dsn: str, symbols: list[str], months: list[str], quick: bool, log,
                  control: bool = False) -> dict:
    """Train every model family on the sample with the assets' defaults (the demo's sizes change how long
    a model trains, never what it predicts: a later click on Materialize in the UI continues the same
    lineage), then score the champions and shadow the challengers.

    A symbol whose stored history is too short for an honest evaluation (a stock's hourly sessions over
    a few months, say) is skipped with the gate's own reason rather than trained into a failed run. On the
    control market (no 5 % pump in it, say) and on the quick sample (too few in a week of holdout) a family
    may also refuse to train at all: that is recorded as the reason it has no champion, not as a failure.
    """
    from .assets.models import (forecasts, model_assets, nhits_assets, pattern_tcn, patterns, predictions, pump_xgb,
                                regime_hmm, signal_lgbm)
    from .resources import MarketDB, MLflowResource, ModelServer
    from .sensors.models import (nhits_training_job, pattern_training_job, predictions_job, pump_training_job,
                                 regime_training_job, signal_training_job)

    resources = {"market_db": MarketDB(database_url=dsn), "mlflow": MLflowResource(), "model_server": ModelServer()}
    out: dict = {}
    # a refusal for want of evidence is expected here: one line of the demo's, not a failure's stack trace
    expected_refusals = control or quick
    loggers, console = console_without_refusals(instance) if expected_refusals else (None, {})
    jobs = {a.key: bound_job(j, model_assets, resources, loggers) for a, j in (
        (pump_xgb, pump_training_job), (regime_hmm, regime_training_job), (signal_lgbm, signal_training_job),
        (pattern_tcn, pattern_training_job), (predictions, predictions_job),
        *((a, nhits_training_job) for a in nhits_assets))}

    def run(asset, config=None, partition_key=None, also=(), family=None):
        """One run of ``asset`` (and the assets ``also`` names, each with its config, in the same job)."""
        t = time.perf_counter()
        configs = {asset: config, **dict(also)}
        r = jobs[asset.key].execute_in_process(
            instance=instance, partition_key=partition_key, raise_on_error=False,
            asset_selection=[a.key for a in configs],
            run_config={"ops": {a.key.to_python_identifier(): {"config": c} for a, c in configs.items() if c},
                        **console})
        also = [a for a in configs if a is not asset]
        for a in (asset, *also):
            label = a.key.to_user_string() + (f"[{partition_key}]" if partition_key else "")
            mats = r.asset_materializations_for_node(a.key.to_python_identifier()) if r.success else []
            md = {k: v.value for k, v in mats[0].metadata.items()} if mats else {}
            out[label] = {"success": r.success, "seconds": round(time.perf_counter() - t, 2),
                          **({"family": family} if family and a is asset else {}),
                          **{k: md[k] for k in ("registered_model", "registered_version", "gate_decision",
                                                "gate_reason", "new_score", "baseline_score", "gate_comparisons",
                                                "rows", "by_model") if k in md}}
            if not r.success and a is asset:
                why = _failure(r)
                # the gate refused before training for want of evidence (nothing registered): the control holds
                # nothing to learn from, the quick sample too little (a week of holdout holds few pumps)
                if expected_refusals and REFUSED in why:
                    out[label].update(success=True, skipped=why)
                else:
                    out[label]["error"] = why
            log(f"{label}: {_brief(out[label])}")
        return r.success

    crypto = [s for s in symbols if "/" in s]
    if crypto:
        run(pump_xgb, DEMO_PUMP, family="pump")
    for sym in symbols:
        for asset, config, family in ((regime_hmm, DEMO_REGIME, "regime"), (signal_lgbm, DEMO_SIGNAL, "signal")):
            why = _not_evaluable(dsn, sym, asset.key.path[-1])
            if why:
                out[f"{asset.key.to_user_string()}[{sym}]"] = {"success": True, "family": family, "skipped": why}
                log(f"{asset.key.to_user_string()}[{sym}]: skipped: {why}")
                continue
            run(asset, config, partition_key=sym, family=family)
    for asset in nhits_assets:
        run(asset, DEMO_NHITS_QUICK if quick else DEMO_NHITS, family="nhits")
    run(pattern_tcn, DEMO_TCN_QUICK if quick else DEMO_TCN, family="tcn")
    # the outputs of the latest month of each symbol (a backfill does the rest: `tp backfill`)
    from .assets.partitions import market_key

    for sym in symbols:
        run(predictions, partition_key=str(market_key(sym, months[-1])),
            also=((forecasts, None), (patterns, None)))
    return out


FAMILIES = ("pump", "regime", "signal", "nhits", "tcn")


def champions(models: dict) -> dict:
    """family -> the models the gate made champion in this demo, each with its evidence: per comparison,
    the lower bound of the improvement against its margin."""
    out: dict = {f: [] for f in FAMILIES}
    for label, r in models.items():
        if r.get("family") and r.get("gate_decision") == "champion":
            comps = r.get("gate_comparisons") or {}
            out[r["family"]].append({
                "model": label, "version": r.get("registered_version"),
                "evidence": {k: {"lower_bound": c["interval"][0], "margin": c["margin"]} for k, c in comps.items()}})
    return out


def gate_figures(models: dict) -> list[dict]:
    """One row per trained model: its family, decision, and per comparison the improvement's lower bound
    and margin (what the closing figures of the demo report)."""
    rows = []
    for label, r in models.items():
        if not r.get("family"):
            continue
        comps = r.get("gate_comparisons") or {}
        rows.append({"model": label, "family": r["family"],
                     "decision": r.get("gate_decision") or ("skipped" if r.get("skipped") else "failed"),
                     "why": r.get("gate_reason") or r.get("skipped") or r.get("error", ""),
                     **{k: [round(c["interval"][0], 4), c["margin"]] for k, c in comps.items()}})
    return rows


def _brief(r: dict) -> dict:
    return {k: v for k, v in r.items() if k not in ("gate_comparisons", "by_model")}


def _failure(result) -> str:
    from dagster import DagsterEventType

    for ev in result.all_events:
        if ev.event_type == DagsterEventType.STEP_FAILURE:
            err = ev.event_specific_data.error
            return (getattr(ev.event_specific_data, "user_failure_data", None) and
                    ev.event_specific_data.user_failure_data.description) or (err.message if err else "failed")
    return "failed"


def _knowledge_base(instance, dsn: str, since: str, log) -> dict:
    """One ``rag_sync_job`` run: the summaries of the latest month (the rest: ``tp rag sync --since DATE``),
    embedded, and the first FAISS index."""
    from .assets.rag import rag_assets, rag_sync_job
    from .resources import MarketDB

    t = time.perf_counter()
    job = bound_job(rag_sync_job, rag_assets, {"market_db": MarketDB(database_url=dsn)})
    r = job.execute_in_process(instance=instance, raise_on_error=False,
                               run_config={"ops": {"rag_documents": {"config": {"since": since}}}})
    out: dict = {"success": r.success, "run_id": r.run_id, "seconds": round(time.perf_counter() - t, 2)}
    if r.success:
        for key in ("rag_documents", "rag_index"):
            mats = r.asset_materializations_for_node(key)
            md = {k: v.value for k, v in mats[0].metadata.items()} if mats else {}
            out.update({k: md[k] for k in ("documents", "embedded", "docs_per_s", "count", "kind", "version")
                        if k in md})
    log(f"knowledge base: {out}")
    return out


def demo_strategy(dsn: str, symbol: str) -> dict | None:
    """The demo strategy on ``symbol``: long when the regime champion says bull or sideways, never while the pump
    model fires, the signal's probability at least 0.55 when the signal model earned a champion; stops, targets,
    costs and risk rules a trader would set. None when no entry rule's model has a champion with outputs."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT s.model_name, s.timeframe, count(*) FROM output_series s JOIN model_champions c ON "
            "c.model_name = s.model_name AND c.version = s.model_version AND c.alias = 'champion' AND c.valid_to IS "
            "NULL WHERE s.output_table = 'predictions' AND s.symbol = %s GROUP BY 1, 2", (symbol,)).fetchall()
    by_family: dict = {}
    for name, tf, _ in rows:
        by_family.setdefault(name.split(".")[0], set()).add(tf)
    entry = [f for f in ("regime_hmm", "signal_lgbm") if f in by_family]
    if not entry:
        return None
    tfs = set.intersection(*(by_family[f] for f in entry))
    if not tfs:
        return None
    tf = "1h" if "1h" in tfs else sorted(tfs)[0]
    rules: dict = {"stop_loss": 0.02, "take_profit": 0.04, "time_exit": 24}
    if "regime_hmm" in entry:
        rules["regime"] = {"model": "regime_hmm", "allow": ["bull", "sideways"]}
    if "signal_lgbm" in entry:
        rules["signal"] = {"model": "signal_lgbm", "min": 0.55}
    if tf in by_family.get("pump_xgb", ()):
        rules["pump_veto"] = {"model": "pump_xgb", "threshold": 0.5}
    return {"name": "demo_trend", "description": "the demo strategy (tp demo)",
            "universe": [{"symbol": symbol, "timeframe": tf}], "cash": 10_000, "rules": rules,
            "costs": {"fee_bps": 10, "spread_bps": 4, "slippage_bps": 2},
            "risk": {"position_fraction": 0.5, "daily_loss_limit": 0.05, "max_drawdown": 0.2, "cooldown_bars": 2}}


def _paper(instance, dsn: str, symbols: list[str], months: list[str], quick: bool, log, end: datetime) -> dict:
    """The demo strategy backtested over the latest month (the one the demo scored) up to ``end`` (the demo's
    day), against its controls."""
    import json

    from .api import paper as api

    t = time.perf_counter()
    spec = demo_strategy(dsn, symbols[0])
    if spec is None:
        log("paper: no entry rule's model earned a champion on the sample: the demo strategy is not backtested")
        return {"skipped": "no regime or signal champion with predictions"}
    try:
        api.add_strategy(json.dumps(spec) + "\n", instance=instance)
        out = api.backtest(spec["name"], months[-1], end.isoformat(), replicates=50 if quick else 200)
    except Exception as e:  # noqa: BLE001 - the summary names it; the rest of the demo stands
        log(f"paper: the demo strategy's backtest failed: {e}")
        return {"error": str(e)}
    st, bh, rnd = out["stats"], out["vs_buy_and_hold"], out["vs_random_entry"]
    got = {"strategy": spec["name"], "run_id": out["run"]["run_id"], "series": f"{symbols[0]} "
           f"{spec['universe'][0]['timeframe']}", "orders": st["orders"], "trades": st["trades"],
           "total_return": st["total_return"], "max_drawdown": st["max_drawdown"],
           "beats_buy_and_hold": bool(bh and bh["beats"]), "beats_random_entry": bool(rnd and rnd["beats"]),
           "seconds": round(time.perf_counter() - t, 2)}
    log(f"paper: {got}")
    return got


# demo-sized models: how long they train and how much they hold out, never what they predict (the lineage is the
# assets' defaults', so Materialize in the UI continues it); the TCN learns at a higher rate on fewer windows
# than its default, on both cores
DEMO_PUMP: dict = {}
DEMO_REGIME = {"n_iter": 30}
DEMO_SIGNAL: dict = {}
DEMO_NHITS: dict = {}  # the asset's defaults: 300 steps took 4.8 s more than 100 here, and forecast far better
DEMO_NHITS_QUICK = {"max_steps": 50, "min_origins": 20}
DEMO_TCN = {"epochs": 6, "n_synthetic": 10_000, "lr": 0.01, "threads": 2}
DEMO_TCN_QUICK = {"epochs": 2, "n_synthetic": 1000}


def _not_evaluable(dsn: str, symbol: str, family: str) -> str | None:
    """The gate's own reason why this symbol's stored history cannot evaluate a model, or None."""
    from .assets.training import symbol_frame
    from .models import classifier, regime, signal
    from .models.common import EvaluationError
    from .resources import MarketDB

    _, frame = symbol_frame(MarketDB(database_url=dsn), symbol, None)
    try:
        if family == "signal_lgbm":
            cfg = signal.SignalConfig()
            classifier.validate(signal.build_task(frame.sort("ts"), cfg), symbol, cfg.min_episodes)
        else:
            regime.check_rows(frame, regime.RegimeConfig(), symbol)
    except EvaluationError as e:
        return str(e)
    return None
