"""Retention of Dagster's run history: the purge of old runs and their compute logs.

The live path makes a run per batch (thousands a day); their records, events and compute logs would grow the
Dagster database and the compute-log volume without bound. Pure logic over a ``DagsterInstance``: the job and
schedule that run it every hour are in ``sensors/maintenance.py``.

What is deleted: finished runs that materialized no asset (the live runs, ``tp/run_kind: live``, and this
purge's own runs), older than ``TP_RUN_RETENTION_DAYS``, with their events and compute logs. Runs that
materialized assets stay: their events are the assets' history (partition status, lineage, what a backfill
did), but their compute logs (stdout/stderr) go after the same number of days, and so do the sensors' and
schedules' tick logs. The outputs of every run are in the market store's tables, which this never touches.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone

PURGED_KINDS = ("live", "maintenance")  # tp/run_kind values of runs that write tables, not assets
DEFAULT_RETENTION_DAYS = 7
BATCH = 500
TIME_BUDGET_S = 600.0  # one purge run stops after this (the next hourly one goes on)
_RUN_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_INSTIGATOR_LOGS = "__repository__"  # where sensors and schedules keep their ticks' logs


@dataclass
class PurgeResult:
    runs_deleted: int = 0
    compute_logs_deleted: int = 0  # runs whose stdout/stderr went
    tick_logs_deleted: int = 0     # sensor and schedule tick log files
    cutoff: str = ""
    more: bool = False  # the time budget stopped it: the next run goes on

    def as_dict(self) -> dict:
        return asdict(self)


def retention_days() -> float:
    """``TP_RUN_RETENTION_DAYS`` (default 7): a finite number of days, at least 1 (a failed live run must outlive
    its retries, the daemon's run-retry pass) and at most ``settings.MAX_DAYS``."""
    from .settings import env_days

    return float(env_days("TP_RUN_RETENTION_DAYS", DEFAULT_RETENTION_DAYS, minimum=1))


def purge_runs(instance, days: float | None = None, *, now: datetime | None = None, batch: int = BATCH,
               time_budget_s: float = TIME_BUDGET_S) -> PurgeResult:
    """Delete the finished table-writing runs last updated more than ``days`` ago (events and compute logs
    too), oldest first, in batches until none is left or ``time_budget_s`` is spent; then the compute logs of
    the other finished runs and the tick logs of sensors and schedules older than that."""
    from dagster import DagsterRunStatus, RunsFilter

    days = retention_days() if days is None else days
    cutoff = (now or datetime.now(timezone.utc)) - timedelta(days=days)
    deadline = time.monotonic() + time_budget_s
    finished = [s for s in DagsterRunStatus if s.value in ("SUCCESS", "FAILURE", "CANCELED")]
    out = PurgeResult(cutoff=cutoff.isoformat())
    logs = instance.compute_log_manager
    for kind in PURGED_KINDS:
        while True:
            # finished runs only: the purge's own run (started) is never among them
            records = instance.get_run_records(
                RunsFilter(tags={"tp/run_kind": kind}, statuses=finished, updated_before=cutoff),
                limit=batch + 1, ascending=True)
            for rec in records:
                run_id = rec.dagster_run.run_id
                logs.delete_logs(prefix=[run_id])
                instance.delete_run(run_id)
                out.runs_deleted += 1
            if len(records) <= batch:
                break
            if time.monotonic() > deadline:
                out.more = True
                return out
    _purge_log_files(instance, logs, cutoff.timestamp(), out, deadline)
    return out


def _purge_log_files(instance, logs, cutoff_ts: float, out: PurgeResult, deadline: float) -> None:
    """The local compute-log manager (docker/dagster.yaml's) keeps a folder per run, named by its id and created
    when it starts, and one per sensor or schedule under ``__repository__``: the runs' folders go whole once the
    run is finished (its record and events stay), the ticks' files one by one by their own age."""
    base = getattr(logs, "_base_dir", None)
    if not base or not os.path.isdir(base):
        return  # another compute-log manager: its own retention applies
    for entry in os.scandir(base):
        if time.monotonic() > deadline:
            out.more = True
            return
        if not (entry.is_dir() and _RUN_ID.match(entry.name)) or entry.stat().st_mtime >= cutoff_ts:
            continue
        run = instance.get_run_by_id(entry.name)
        if run is not None and not run.is_finished:
            continue
        logs.delete_logs(prefix=[entry.name])
        out.compute_logs_deleted += 1
    ticks = os.path.join(base, _INSTIGATOR_LOGS)
    for root, _dirs, files in os.walk(ticks):
        for name in files:
            path = os.path.join(root, name)
            try:
                if os.stat(path).st_mtime < cutoff_ts:
                    os.remove(path)
                    out.tick_logs_deleted += 1
            except FileNotFoundError:  # a tick's log written and removed meanwhile
                continue
