"""The hourly purge of old runs and compute logs (``trading_platform/maintenance.py``): on by default, since the
live path makes thousands of runs a day; ``TP_RUN_RETENTION_DAYS`` sets how long they stay. The same job prunes
finished alert deliveries (``TP_ALERT_DELIVERY_RETENTION_DAYS``, default 30), and the superseded output rows
older than ``TP_SUPERSEDED_RETENTION_DAYS`` (unset: kept)."""

from dagster import DefaultScheduleStatus, OpExecutionContext, ScheduleDefinition, in_process_executor, job, op

from ..resources import MarketDB

MAINTENANCE_TAGS = {"tp/run_kind": "maintenance"}


@op(name="purge_old_runs")
def purge_old_runs(context: OpExecutionContext) -> dict:
    from ..maintenance import purge_runs

    result = purge_runs(context.instance).as_dict()
    context.log.info(f"purged: {result}")
    context.add_output_metadata(result)
    return result


@op(name="prune_alert_deliveries")
def prune_alert_deliveries(context: OpExecutionContext, market_db: MarketDB) -> int:
    from ..alerts.delivery import prune, retention_days

    with market_db.open() as store:
        n = prune(store.conn)
    context.log.info(f"pruned {n} finished alert deliveries older than {retention_days():g} days")
    context.add_output_metadata({"deliveries_pruned": n})
    return n


@op(name="fold_metric_deltas")
def fold_metric_deltas(context: OpExecutionContext, market_db: MarketDB) -> int:
    from ..store.metrics import fold

    with market_db.open() as store:
        n = fold(store.conn)
    context.add_output_metadata({"metric_deltas_folded": n})
    return n


@op(name="compact_superseded_outputs")
def compact_superseded_outputs(context: OpExecutionContext, market_db: MarketDB) -> dict:
    from ..store.outputs import compact_superseded, superseded_retention_days

    days = superseded_retention_days()
    if days is None:
        context.log.info("TP_SUPERSEDED_RETENTION_DAYS is not set: every superseded output row is kept")
        return {}
    with market_db.open() as store:
        deleted = compact_superseded(store.conn, days)
    context.log.info(f"deleted the output rows superseded more than {days:g} days ago: {deleted}")
    context.add_output_metadata({f"superseded_deleted_{t}": n for t, n in deleted.items()})
    return deleted


@job(name="maintenance_job", executor_def=in_process_executor, tags=MAINTENANCE_TAGS,
     description="Delete finished live runs older than TP_RUN_RETENTION_DAYS (default 7) with their events and "
                 "compute logs, and the compute logs of older asset runs (their records stay) and of older ticks; "
                 "and finished alert deliveries older than TP_ALERT_DELIVERY_RETENTION_DAYS (default 30); fold the metric "
                 "counters' appended deltas (tp_fold_metrics()); and delete the output rows superseded more than "
                 "TP_SUPERSEDED_RETENTION_DAYS ago (unset: kept).")
def maintenance_job():
    purge_old_runs()
    prune_alert_deliveries()
    fold_metric_deltas()
    compact_superseded_outputs()


maintenance_schedule = ScheduleDefinition(
    name="maintenance_schedule", job=maintenance_job, cron_schedule="17 * * * *", execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING, tags=MAINTENANCE_TAGS)
