"""The watchdog in the daemon: ``watchdog_sensor`` runs the checks that need the store, every
``TP_WATCHDOG_INTERVAL_S`` (30 s), and records their states as asset check evaluations on the assets they watch
(``watchdog_<check>``, ``assets/watchdog.py``; severity WARN or ERROR), so the asset graph turns red where the
platform is failing.
`tp watchdog run` (``watchdog/service.py``) reports its own checks the same way. The checks and the messages:
``trading_platform/watchdog/``.
"""

from __future__ import annotations

import logging

from dagster import AssetCheckSeverity, DefaultSensorStatus, SensorEvaluationContext, SkipReason, sensor

from ..assets.watchdog import check_key
from ..errors import InvalidInput
from ..resources import MarketDB
from ..watchdog.checks import SPECS, thresholds

log = logging.getLogger(__name__)


def _interval() -> int:
    try:
        return max(1, int(thresholds().interval_s))
    except InvalidInput as e:  # the sensor's ticks say it (below); the code location still loads
        log.error("%s", e)
        return 30


def dagster_reporter(instance):
    """``report(state, changed)`` for the engine: a changed state (and a state never reported) becomes an asset
    check evaluation of its asset, recorded in ``instance`` without a run."""
    from dagster import AssetCheckEvaluation

    def report(st, changed: bool) -> None:
        key = check_key(st.name)
        if key is None or not changed or st.state == "unknown":
            return
        instance.report_runless_asset_event(AssetCheckEvaluation(
            asset_key=key[0], check_name=key[1], passed=st.state != "failing",
            severity=AssetCheckSeverity.WARN if st.severity == "WARN" else AssetCheckSeverity.ERROR,
            metadata={"state": st.state, "detail": (st.detail or "")[:500], "subjects": ", ".join(st.subjects)[:500],
                      "since": st.since.isoformat() if st.since else ""},
            description=(st.detail or "")[:500]))

    return report


@sensor(name="watchdog_sensor", minimum_interval_seconds=_interval(), default_status=DefaultSensorStatus.RUNNING,
        description="The watchdog's checks on the store (data_stale, collector_down, stream_stale, live_backlog, "
                    "live_batch_retrying, run_failed, mlflow_unreachable, deliveries_dead, model_refused): a message "
                    "through the alert outbox when one starts failing, a reminder every 15 min, one when it recovers "
                    "(tp watchdog status).")
def watchdog_sensor(context: SensorEvaluationContext, market_db: MarketDB):
    import os

    from ..settings import get_settings
    from ..watchdog import checks, engine

    t = thresholds()
    names = checks.for_runner("sensor", t)
    try:
        tracking = os.environ.get("MLFLOW_TRACKING_URI") or get_settings().mlflow_tracking_uri
    except InvalidInput:
        tracking = None
    with market_db.open() as store:
        look = checks.Look(store.conn, engine.now_utc(), t, instance=context.instance, tracking=tracking)
        states, messages = engine.run_pass(store.conn, names, look, "sensor",
                                           report=dagster_reporter(context.instance))
    failing = [s.name for s in states if s.state == "failing"]
    return SkipReason(f"{len(names)} checks: " + (f"failing {', '.join(failing)}" if failing else "all passing")
                      + (f"; {len(messages)} message(s)" if messages else ""))
