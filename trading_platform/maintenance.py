"""Retention of Dagster's run history: the purge of old runs and their compute logs.

The live path makes a run per batch (thousands a day); their records, events and compute logs would grow the
Dagster database and the compute-log volume without bound. Pure logic over a ``DagsterInstance``: the job and
schedule that run it daily are in ``sensors/maintenance.py``.

What is deleted: finished runs that materialized no asset (the live runs, ``tp/run_kind: live``, and this
purge's own runs), older than ``TP_RUN_RETENTION_DAYS``, with their events and compute logs. Runs that
materialized assets stay: their events are the assets' history (partition status, lineage, what a backfill
did), but their compute logs (stdout/stderr) go after the same number of days. The outputs of every run are
in the market store's tables, which this never touches.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone

from .errors import InvalidInput

PURGED_KINDS = ("live", "maintenance")  # tp/run_kind values of runs that write tables, not assets
DEFAULT_RETENTION_DAYS = 7
BATCH = 1000


@dataclass
class PurgeResult:
    runs_deleted: int = 0
    compute_logs_deleted: int = 0
    cutoff: str = ""
    more: bool = False  # the batch limit stopped it: the next tick goes on

    def as_dict(self) -> dict:
        return asdict(self)


def retention_days() -> float:
    raw = os.environ.get("TP_RUN_RETENTION_DAYS", str(DEFAULT_RETENTION_DAYS)).strip()
    try:
        days = float(raw)
    except ValueError:
        days = -1.0
    if days < 0:
        raise InvalidInput(f"TP_RUN_RETENTION_DAYS={raw!r} is not a number of days >= 0",
                           field="TP_RUN_RETENTION_DAYS")
    return days


def purge_runs(instance, days: float | None = None, *, now: datetime | None = None, limit: int = BATCH,
               keep_run_id: str | None = None) -> PurgeResult:
    """Delete the finished table-writing runs last updated more than ``days`` ago (events and compute logs
    too), and the compute logs of older asset runs; at most ``limit`` of each per call."""
    from dagster import DagsterRunStatus, RunsFilter

    days = retention_days() if days is None else days
    cutoff = (now or datetime.now(timezone.utc)) - timedelta(days=days)
    finished = [s for s in DagsterRunStatus if s.value in ("SUCCESS", "FAILURE", "CANCELED")]
    out = PurgeResult(cutoff=cutoff.isoformat())
    logs = instance.compute_log_manager
    for kind in PURGED_KINDS:
        records = instance.get_run_records(
            RunsFilter(tags={"tp/run_kind": kind}, statuses=finished, updated_before=cutoff), limit=limit)
        for rec in records:
            run_id = rec.dagster_run.run_id
            if run_id == keep_run_id:
                continue
            logs.delete_logs(prefix=[run_id])
            instance.delete_run(run_id)
            out.runs_deleted += 1
        out.more = out.more or len(records) == limit
    # the other runs' stdout/stderr: a run keeps its record and events, its log files go. The local compute-log
    # manager (docker/dagster.yaml) keeps a folder per run, created when the run starts
    base = getattr(logs, "_base_dir", None)
    if base and os.path.isdir(base):
        for entry in sorted(os.scandir(base), key=lambda e: e.stat().st_mtime):
            if out.compute_logs_deleted >= limit:
                out.more = True
                break
            if not entry.is_dir() or entry.stat().st_mtime >= cutoff.timestamp():
                break
            run = instance.get_run_by_id(entry.name)
            if run is not None and not run.is_finished:
                continue
            logs.delete_logs(prefix=[entry.name])
            out.compute_logs_deleted += 1
    return out
