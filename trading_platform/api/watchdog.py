"""The watchdog (``trading_platform/watchdog/``): its checks' states, and `tp watchdog run`."""

from __future__ import annotations

from ._context import stopped_by_signals, store_or_open


def status(*, check: str | None = None, store=None) -> list[dict]:
    """Every check (or ``check``) with its state (ok | failing | unknown), since when, what fails, its detail and
    the last message (its key, type and delivery status)."""
    from ..watchdog.checks import check_name, thresholds
    from ..watchdog.engine import report_states

    names = [check_name(check)] if check is not None else None
    disabled = thresholds().disabled
    with store_or_open(store) as s:
        return report_states(s.conn, names, disabled)


def run(*, once: bool = False, interval_s=None, dsn: str | None = None) -> dict:
    """Run `tp watchdog run` until SIGINT or SIGTERM (or one pass with ``once``): the daemon's heartbeat, the
    database, the delivery worker, and the spool. A bad threshold is refused before it starts."""
    from ..instance import get_instance
    from ..settings import get_settings
    from ..store.runtime import database_url
    from ..watchdog.checks import thresholds
    from ..watchdog.service import run as run_service

    # --interval is read as TP_WATCHDOG_INTERVAL_S is: plain decimal seconds, from 1 to a year
    t = thresholds(**({"interval_s": interval_s, "labels": {"interval_s": ("interval", "--interval")}}
                      if interval_s is not None else {}))
    settings = get_settings()
    dsn = dsn or database_url(settings)
    cache = {}

    def instance():
        if "i" not in cache:
            cache["i"] = get_instance(settings)
        return cache["i"]

    def report(st, changed):
        from ..sensors.watchdog import dagster_reporter

        dagster_reporter(instance())(st, changed)

    with stopped_by_signals() as stop:
        return run_service(dsn, home=settings.home, t=t, stop=stop, once=once, instance=instance, report=report)
