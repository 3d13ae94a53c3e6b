"""Settings of the live path, from the environment (read when used)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import InvalidInput
from ..settings import env_number


@dataclass(frozen=True)
class LiveSettings:
    batch_max: int = 500          # TP_LIVE_BATCH_MAX: events one run takes at most
    wait_s: float = 4.0           # TP_LIVE_WAIT_S: how long a tick waits for an event when none is pending
    poll_s: float = 1.0           # TP_LIVE_POLL_S: re-check period inside that wait (the path without NOTIFY)
    listen: bool = True           # TP_LIVE_LISTEN: 0 when NOTIFY does not reach the sensor (a pooler)
    retry_after_s: float = 60.0   # TP_LIVE_RETRY_AFTER_S: a claimed batch not done after this is re-requested
    max_runtime_s: float = 120.0  # TP_LIVE_MAX_RUNTIME_S: a live run still going after this is ended (dagster/max_runtime)
    retention_h: float = 72.0     # TP_LIVE_RETENTION_H: processed events older than this are pruned
    max_runs: int | None = None   # TP_LIVE_MAX_RUNS: live runs at once (default: the tag limit in dagster.yaml)


# Dagster gives a sensor tick 60 s (its sensor gRPC timeout, DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS) before it fails
# the tick: the live tick's wait for an event stays well under it, leaving the rest for its pruning and claims
MAX_WAIT_S = 30.0

# the largest value each setting takes (the collector's, live/collector.py, are read through _num too): past
# these a value is a typo, and a deadline or an interval that far off never comes (or overflows PostgreSQL's)
MAXIMA = {
    "TP_LIVE_BATCH_MAX": 100_000,
    "TP_LIVE_WAIT_S": MAX_WAIT_S,
    "TP_LIVE_POLL_S": MAX_WAIT_S,
    "TP_LIVE_RETRY_AFTER_S": 86_400.0,
    "TP_LIVE_MAX_RUNTIME_S": 86_400.0,
    "TP_LIVE_RETENTION_H": 876_000.0,  # 36,500 days, as the other retentions (settings.MAX_DAYS)
    "TP_LIVE_MAX_RUNS": 1_000,
    "TP_COLLECT_GRACE_S": 3_600.0,
    "TP_COLLECT_REFRESH_S": 3_600.0,
    "TP_COLLECT_POLL_S": 3_600.0,
    "TP_COLLECT_HEAL_MAX": 1_000_000,
    "TP_COLLECT_STREAMS_PER_CONNECTION": 10_000,
}


def _num(name: str, default, cast, minimum, maximum=None):
    """``name`` as ``cast``: finite, at least ``minimum`` and at most ``maximum`` (default: its MAXIMA entry);
    unset or blank: ``default``. Anything else is refused naming the variable."""
    unit = "seconds" if name.endswith("_S") else "hours" if name.endswith("_H") else ""
    return env_number(name, default, cast=cast, minimum=minimum,
                      maximum=MAXIMA.get(name) if maximum is None else maximum, unit=unit)


def live_settings() -> LiveSettings:
    d = LiveSettings()
    listen = os.environ.get("TP_LIVE_LISTEN", "1").strip().lower()
    if listen not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
        raise InvalidInput(f"TP_LIVE_LISTEN={listen!r} is not a boolean (1 or 0)", field="TP_LIVE_LISTEN")
    return LiveSettings(
        batch_max=_num("TP_LIVE_BATCH_MAX", d.batch_max, int, 1),
        wait_s=_num("TP_LIVE_WAIT_S", d.wait_s, float, 0),
        poll_s=_num("TP_LIVE_POLL_S", d.poll_s, float, 0.05),
        listen=listen in ("1", "true", "yes", "on"),
        retry_after_s=_num("TP_LIVE_RETRY_AFTER_S", d.retry_after_s, float, 0),
        max_runtime_s=_num("TP_LIVE_MAX_RUNTIME_S", d.max_runtime_s, float, 1),
        retention_h=_num("TP_LIVE_RETENTION_H", d.retention_h, float, 0),
        max_runs=_num("TP_LIVE_MAX_RUNS", None, int, 1),
    )
