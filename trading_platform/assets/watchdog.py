"""The watchdog's states as asset checks (``watchdog_<check>``) on the assets the checks watch: the asset graph turns
red where the platform is failing. ``watchdog_sensor`` and `tp watchdog run` record an evaluation whenever a state
changes (without a run); executing one from the UI reads the stored state. They are no work of the asset jobs: every
job's selection leaves them out (``without_watchdog_checks``), so a materialization never runs them.
"""

from __future__ import annotations

from dagster import AssetCheckResult, AssetCheckSeverity, AssetKey, AssetSelection, asset_check

from ..resources import MarketDB
from ..watchdog.checks import SPECS


def check_key(name: str) -> tuple[AssetKey, str] | None:
    """(asset, check name) of a watchdog check shown in the UI; None when no asset watches it."""
    asset = SPECS[name][2]
    return (AssetKey(list(asset)), f"watchdog_{name}") if asset else None


def without_watchdog_checks(assets) -> AssetSelection:
    """An asset job's selection: ``assets`` (definitions) and their own checks, not the watchdog's (a job that
    selects an asset takes every check on it). Named by the checks the assets define, so it resolves in any
    ``Definitions`` that holds the assets, with the watchdog's checks or without."""
    own = [k for a in assets for k in a.check_keys]
    selection = AssetSelection.assets(*assets).without_checks()
    return selection | AssetSelection.checks(*own) if own else selection


def _make_check(name: str):
    key, check_name = check_key(name)

    @asset_check(asset=key, name=check_name, blocking=False,
                 description=f"watchdog: {SPECS[name][3]} (its state as the watchdog last saw it; tp watchdog status)")
    def _check(context, market_db: MarketDB) -> AssetCheckResult:
        from ..watchdog.engine import report_states

        with market_db.open() as store:
            st = report_states(store.conn, [name])[0]
        return AssetCheckResult(passed=st["state"] != "failing",
                                severity=AssetCheckSeverity.WARN if st["severity"] == "WARN" else AssetCheckSeverity.ERROR,
                                metadata={"state": st["state"], "detail": st["detail"] or "",
                                          "since": st["since"] or ""},
                                description=st["detail"] or None)

    return _check


watchdog_checks = [_make_check(n) for n in SPECS if SPECS[n][2]]
