"""``paper_backtest``: a strategy's backtest as an asset, partitioned month x strategy.

A month's run starts from the state stored at the previous month's end (cash, positions, open orders, the risk
book: ``paper_runs.state``), so extending a backtest costs only the new month, and a chain of months places the
same orders as one run over them (tests/test_paper_store.py). The first month with candles starts from the
spec's cash; a later month whose previous one has no stored end state fails naming it (``start_fresh`` starts
there anyway). The versions are pinned when a chain starts (today's champions) and kept by every month after.
A month's run is keyed by the strategy version, the month and the pins: materializing it again keeps its run id
and replaces its rows. Each month is logged to MLflow (experiment ``paper``) and reports its figures, both
comparisons, the plot and the MLflow run in the metadata.

The ``strategy`` partitions mirror the ``strategies`` table (``tp paper strategies add``, and the symbols sensor
keeps them in step). The asset reads the ``predictions`` of its month (every symbol).
"""


import base64
import warnings

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    Config,
    DimensionPartitionMapping,
    DynamicPartitionsDefinition,
    Failure,
    IdentityPartitionMapping,
    MaterializeResult,
    MetadataValue,
    MultiPartitionKey,
    MultiPartitionMapping,
    MultiPartitionsDefinition,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    DefaultScheduleStatus,
    asset,
    define_asset_job,
    schedule,
)

try:  # MultiPartitionMapping is marked beta in Dagster 1.13; it is the documented way to map one dimension
    from dagster import BetaWarning

    warnings.filterwarnings("ignore", category=BetaWarning, message=".*MultiPartitionMapping.*")
except ImportError:  # pragma: no cover
    pass

from ..paper import STRATEGY_PARTITIONS  # noqa: E402
from ..resources import MarketDB, MLflowResource  # noqa: E402
from .partitions import month_bounds, month_partitions
from .watchdog import without_watchdog_checks

PAPER_KEY = AssetKey(["paper_backtest"])
strategy_partitions = DynamicPartitionsDefinition(name=STRATEGY_PARTITIONS)
def paper_partitions_from(months) -> MultiPartitionsDefinition:
    return MultiPartitionsDefinition({"month": months, "strategy": strategy_partitions})


paper_partitions = paper_partitions_from(month_partitions)
# the month's predictions, of every symbol (a strategy's universe is not a partition of them)
_SAME_MONTH = MultiPartitionMapping({"month": DimensionPartitionMapping("month", IdentityPartitionMapping())})


class PaperConfig(Config):
    replicates: int = 200       # random-entry replicates of each month's comparison
    start_fresh: bool = False   # start the month from the spec's cash even when the previous month has no state


def paper_key(strategy: str, month: str) -> MultiPartitionKey:
    return MultiPartitionKey({"month": month, "strategy": strategy})


def split_paper_keys(keys) -> dict[str, list[str]]:
    """strategy -> its months in order (a run's months are backtested in order: each continues the last)."""
    out: dict[str, set] = {}
    for k in keys:
        kd = k.keys_by_dimension if isinstance(k, MultiPartitionKey) else \
            paper_partitions.get_partition_key_from_str(k).keys_by_dimension
        out.setdefault(kd["strategy"], set()).add(kd["month"])
    return {s: sorted(m) for s, m in sorted(out.items())}


def backtest_month(store, name: str, month: str, *, replicates: int, start_fresh: bool, mlflow=None) -> dict:
    """The month's backtest of strategy ``name`` (its newest version), continuing the previous month's."""
    from ..api.paper import check_universe
    from ..paper import backtest as driver
    from ..paper.spec import parse
    from ..store import paper as paper_store

    row = paper_store.strategy(store.conn, name)
    if row is None:
        raise Failure(f"no strategy named {name!r} (tp paper strategies add FILE); its partition is stale")
    spec = parse(row["spec"], stored=True)
    check_universe(store, spec)
    start, end = month_bounds(month)
    prev = paper_store.end_state(store.conn, spec.version, month_bounds(_previous(month) + "-01")[0], start)
    state = parent = pins = None
    if prev is not None:
        parent, pins, state = prev
    elif not start_fresh and _has_candles_before(store, spec, start):
        raise Failure(f"paper_backtest {name} {month[:7]}: no end state is stored for the month before "
                      f"({_previous(month)}) of strategy version {spec.version}; materialize that month first "
                      "(a backfill runs a strategy's months in order), or set start_fresh to start here")
    return driver.run_and_report(store, spec, start, end, replicates=replicates, mlflow=mlflow, pins=pins,
                                 state=state, parent=parent, partition=str(paper_key(name, month)))


def _previous(month: str) -> str:
    y, m = int(month[:4]), int(month[5:7])
    y, m = (y - 1, 12) if m == 1 else (y, m - 1)
    return f"{y:04d}-{m:02d}"


def _has_candles_before(store, spec, start) -> bool:
    return any(store.conn.execute(
        "SELECT EXISTS (SELECT 1 FROM ohlcv WHERE symbol = %s AND timeframe = %s AND ts < %s)",
        (symbol, tf, start)).fetchone()[0] for symbol, tf in spec.universe)


@asset(key=PAPER_KEY, partitions_def=paper_partitions, group_name="paper", kinds={"postgres", "mlflow"},
       deps=[AssetDep(AssetKey(["predictions"]), partition_mapping=_SAME_MONTH)],
       backfill_policy=BackfillPolicy.single_run(),
       description="A strategy's backtest month by month (orders, fills, positions, trades, equity and risk events "
                   "in PostgreSQL), each month continuing the previous one's end state, judged against buy-and-hold "
                   "and random entry; logged to MLflow (experiment paper).")
def paper_backtest(context: AssetExecutionContext, config: PaperConfig, market_db: MarketDB,
                   mlflow: MLflowResource) -> MaterializeResult:
    if not 1 <= config.replicates <= 10_000:
        raise Failure(f"replicates must be from 1 to 10000, got {config.replicates}")
    results = []
    with market_db.open() as store:
        for name, months in split_paper_keys(context.partition_keys).items():
            for month in months:
                out = backtest_month(store, name, month, replicates=config.replicates,
                                     start_fresh=config.start_fresh and month == months[0], mlflow=mlflow)
                st = out["stats"]
                context.log.info("%s %s: %d orders, %d trades, return %+.2f%%, run %s", name, month[:7],
                                 st["orders"], st["trades"], 100 * st["total_return"], out["run"]["run_id"])
                results.append((name, month, out))
    return MaterializeResult(metadata=_metadata(results))


def _metadata(results) -> dict:
    name, month, last = results[-1]
    st, run, ml = last["stats"], last["run"], last["mlflow"] or {}
    figures = {k: st[k] for k in ("total_return", "sharpe", "sortino", "max_drawdown", "calmar", "turnover",
                                  "exposure", "hit_rate", "trades", "orders", "profit_factor", "sqn", "costs_paid",
                                  "periods_per_year")}
    md = {
        "strategy": name, "month": month[:7], "paper_run_id": run["run_id"], "parent_run": run.get("parent") or "",
        "strategy_version": run["version"], "pins": MetadataValue.json(run["pins"]),
        "figures": MetadataValue.json(figures),
        "total_return": float(st["total_return"]), "max_drawdown": float(st["max_drawdown"]),
        "orders": int(st["orders"]), "trades": int(st["trades"]),
        "vs_buy_and_hold": MetadataValue.json(last["vs_buy_and_hold"]),
        "vs_random_entry": MetadataValue.json(last["vs_random_entry"]),
        "months": MetadataValue.json([{"strategy": n, "month": m[:7], "run_id": o["run"]["run_id"],
                                       "return": o["stats"]["total_return"], "orders": o["stats"]["orders"]}
                                      for n, m, o in results]),
    }
    if ml.get("mlflow_run_id"):
        md["mlflow_run_id"] = ml["mlflow_run_id"]
    if ml.get("url"):
        md["mlflow_run"] = MetadataValue.url(ml["url"])
    if ml.get("plot"):
        md["equity_and_drawdown"] = MetadataValue.md(
            f"![equity and drawdown](data:image/png;base64,{base64.b64encode(ml['plot']).decode()})")
    return md


# ---- live runs ------------------------------------------------------------------------------------------------
PAPER_LIVE_KEY = AssetKey(["paper_live"])
LAG_WARN_S = 300.0  # the paper consumer's oldest unprocessed event older than this: behind
PAPER_LIVE_TAGS = {"tp/run_kind": "paper_live"}


@asset(key=PAPER_LIVE_KEY, partitions_def=strategy_partitions, group_name="paper", kinds={"postgres"},
       check_specs=[
           AssetCheckSpec("paper_live_no_risk_lock", asset=PAPER_LIVE_KEY,
                          description="No risk lock holds on the live run (drawdown breaker, the day's loss limit, "
                                      "the stop guard)"),
           AssetCheckSpec("paper_live_keeping_up", asset=PAPER_LIVE_KEY,
                          description=f"The paper consumer's oldest unprocessed live event is under {LAG_WARN_S:.0f} s "
                                      "old"),
       ],
       description="A strategy's live paper run (tp paper start) as of now: equity, the UTC day's P&L, exposure, "
                   "positions and open orders, and the equity curve; materialized daily by paper_live_schedule.")
def paper_live(context: AssetExecutionContext, market_db: MarketDB) -> MaterializeResult:
    from ..paper import live

    name = context.partition_key
    with market_db.open() as store:
        st = live.status(store)
        runs = [r for r in st["runs"] if r["strategy"] == name]
        if not runs:
            raise Failure(f"{name} has no live run (tp paper start {name})")
        r = runs[0]
        curve = store.conn.execute("SELECT ts, equity FROM paper_equity WHERE run_id = %s ORDER BY ts",
                                   (r["run_id"],)).fetchall()
    lag = (st["consumer"] or {}).get("lag_s") or 0.0
    md = {"paper_run_id": r["run_id"], "status": r["status"], "equity": float(r["equity"]),
          "day_pnl": float(r["day_pnl"]), "exposure": float(r["exposure"]), "positions": len(r["positions"]),
          "open_orders": len(r["open_orders"]), "stepped_to": str(r["stepped_to"] or ""),
          "risk_locks": MetadataValue.json(r["risk_locks"]), "consumer_lag_s": float(lag),
          "promoted_since_start": MetadataValue.json(r["promoted_since_start"])}
    if len(curve) > 1:
        from ..paper.report import plot

        png = plot([c[0] for c in curve], [c[1] for c in curve])
        md["equity_and_drawdown"] = MetadataValue.md(
            f"![equity and drawdown](data:image/png;base64,{base64.b64encode(png).decode()})")
    return MaterializeResult(metadata=md, check_results=[
        AssetCheckResult(check_name="paper_live_no_risk_lock", passed=not r["risk_locks"],
                         severity=AssetCheckSeverity.WARN,
                         metadata={"risk_locks": MetadataValue.json(r["risk_locks"])}),
        AssetCheckResult(check_name="paper_live_keeping_up", passed=lag <= LAG_WARN_S,
                         severity=AssetCheckSeverity.WARN, metadata={"lag_s": float(lag)}),
    ])


paper_live_job = define_asset_job("paper_live_job", selection=without_watchdog_checks([paper_live]),
                                  partitions_def=strategy_partitions, tags=PAPER_LIVE_TAGS,
                                  description="A live paper run's figures and checks, one strategy a run")


@schedule(name="paper_live_schedule", job=paper_live_job, cron_schedule="5 0 * * *", execution_timezone="UTC",
          default_status=DefaultScheduleStatus.RUNNING,
          description="Daily: paper_live for every strategy running live (skipped when none is).")
def paper_live_schedule(context: ScheduleEvaluationContext, market_db: MarketDB):
    with market_db.open() as store:
        names = [r[0] for r in store.conn.execute(
            "SELECT DISTINCT strategy_name FROM paper_runs WHERE mode = 'live' AND status = 'running' ORDER BY 1"
        ).fetchall()]
    if not names:
        return SkipReason("no strategy is running live")
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return [RunRequest(run_key=f"paper_live|{n}|{day}", partition_key=n) for n in names]


paper_assets = [paper_backtest, paper_live]
