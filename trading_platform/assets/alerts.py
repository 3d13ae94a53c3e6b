"""The ``alerts`` asset: the pending alerts judged on the candles that came, every minute when something is due.

A live batch judges the alerts of its own series in its transaction (``live/process.py``); ``alerts_schedule``
materializes this asset every minute for the rest (series without live candles, expiries), and skips the tick
when no pending alert has a new closed candle or a passed expiry (``alerts.core.due``: one probe per pending
alert). Each materialization records the pending and resolved counts and the champions' out-of-sample hit rates
(with their Wilson intervals), and two checks: ``alerts_judged_on_time`` (ERROR: no pending alert more than two
minutes past its expiry) and ``deliveries_healthy`` (WARN: no destination misconfigured, no delivery dead, and
nothing waiting longer than ``TP_ALERT_BACKLOG_WARN_S``, default 300 s).
"""


from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    DefaultScheduleStatus,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    asset,
    define_asset_job,
    schedule,
)

from ..resources import MarketDB
from .watchdog import without_watchdog_checks

ALERTS_TAGS = {"tp/run_kind": "alerts"}


@asset(name="alerts", group_name="alerts", check_specs=[
    AssetCheckSpec("alerts_judged_on_time", asset="alerts",
                   description="No pending alert is more than two minutes past its expiry (the evaluation keeps up)"),
    AssetCheckSpec("deliveries_healthy", asset="alerts",
                   description="No destination misconfigured, no delivery dead, no backlog older than "
                               "TP_ALERT_BACKLOG_WARN_S (default 300 s)"),
], description="Alerts judged on the candles that came (success, failed, expired), their hit rates per model, and "
               "the delivery outbox's health.")
def alerts_asset(context: AssetExecutionContext, market_db: MarketDB) -> MaterializeResult:
    from ..alerts import core
    from ..settings import env_number

    # read before the evaluation commits anything: a bad value fails the run naming it, with nothing done
    warn_s = env_number("TP_ALERT_BACKLOG_WARN_S", 300.0, minimum=0, maximum=30 * 86_400, unit="seconds")
    with market_db.open() as store:
        with store.conn.transaction():
            got = core.evaluate(store.conn)
        summary = core.summary(store.conn)
        deliveries, dests = _delivery_health(store.conn)
    context.log.info("alerts: %d series judged, %d resolved, %d re-judged, %d messages enqueued; %d pending",
                     got["series"], got["resolved"], got["rejudged"], got["deliveries"], summary["pending"])
    bad_dests = [d["name"] for d in dests if d.get("state") not in ("ok", "disabled")]
    dead = int(deliveries.get("dead", 0) or 0)
    oldest = float(deliveries.get("oldest_pending_age_s") or 0)
    healthy = not bad_dests and not dead and oldest <= warn_s
    hit_rates = {m: v["hit_rate"] for m, v in summary["models"].items()}
    return MaterializeResult(
        metadata={"pending": summary["pending"], "resolved_now": got["resolved"], "rejudged": got["rejudged"],
                  "judged_series": got["series"], "hit_rates": MetadataValue.json(hit_rates),
                  "models": MetadataValue.json(summary["models"]), "deliveries": MetadataValue.json(deliveries)},
        check_results=[
            AssetCheckResult(check_name="alerts_judged_on_time", passed=summary["overdue"] == 0,
                             severity=AssetCheckSeverity.ERROR,
                             metadata={"overdue": summary["overdue"], "most_overdue_s": summary["overdue_s"]}),
            AssetCheckResult(check_name="deliveries_healthy", passed=healthy, severity=AssetCheckSeverity.WARN,
                             metadata={"misconfigured": MetadataValue.json(bad_dests), "dead": dead,
                                       "oldest_pending_s": oldest,
                                       "backlog": int(deliveries.get("backlog", 0) or 0)}),
        ])


def _delivery_health(conn) -> tuple[dict, list[dict]]:
    from ..alerts import delivery

    return delivery.status(conn), delivery.destination_status(conn)


alerts_job = define_asset_job("alerts_job", selection=without_watchdog_checks([alerts_asset]), tags=ALERTS_TAGS,
                              description="Judge the pending alerts on their new candles; record hit rates and "
                                          "the deliveries' health.")


@schedule(name="alerts_schedule", job=alerts_job, cron_schedule="* * * * *", execution_timezone="UTC",
          default_status=DefaultScheduleStatus.RUNNING,
          description="Every minute: the alerts asset, when a pending alert has a new closed candle or expired "
                      "(skipped otherwise).")
def alerts_schedule(context: ScheduleEvaluationContext, market_db: MarketDB):
    from ..alerts.core import due

    with market_db.open() as store:
        if not due(store.conn):
            return SkipReason("no pending alert has a new closed candle or a passed expiry")
    return RunRequest(run_key=None, tags=ALERTS_TAGS)


alerts_assets = [alerts_asset]
