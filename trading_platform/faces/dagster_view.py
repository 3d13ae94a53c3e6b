"""``pipeline_status``: Dagster's view read from the instance's Python API (not its GraphQL, which its docs call
still evolving): runs by job and status, failures with their first error line, backfills, the sensors' and
schedules' last ticks, the daemons' heartbeats."""

from __future__ import annotations

import time
from datetime import datetime, timezone


def _ts(t) -> str | None:
    if t is None:
        return None
    if isinstance(t, datetime):
        return t.astimezone(timezone.utc).isoformat()
    return datetime.fromtimestamp(float(t), timezone.utc).isoformat()


def _first_error_line(instance, run_id: str) -> str | None:
    from dagster import DagsterEventType

    for kind in (DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE):
        for rec in instance.all_logs(run_id, of_type=kind):
            ev = rec.dagster_event
            data = getattr(ev, "event_specific_data", None) if ev else None
            err = getattr(data, "error", None)
            text = (getattr(err, "message", None) or getattr(ev, "message", None) or rec.user_message or "").strip()
            if text:
                return text.splitlines()[0][:500]
    return None


def pipeline(instance, hours: int) -> dict:
    from dagster import RunsFilter

    since = datetime.fromtimestamp(time.time() - hours * 3600, timezone.utc)
    records = instance.get_run_records(RunsFilter(created_after=since), limit=5000)
    by: dict[tuple, int] = {}
    failures = []
    for r in records:
        run = r.dagster_run
        key = (run.job_name, run.status.value)
        by[key] = by.get(key, 0) + 1
        if run.status.value == "FAILURE" and len(failures) < 50:
            failures.append({"run_id": run.run_id, "job": run.job_name, "created_at": _ts(r.create_timestamp),
                             "partition": run.tags.get("dagster/partition"),
                             "will_retry": run.tags.get("dagster/will_retry"),
                             "error": _first_error_line(instance, run.run_id)})
    runs = [{"job": j, "status": s, "count": n} for (j, s), n in sorted(by.items())]
    backfills = []
    for b in instance.get_backfills(limit=50):
        created = getattr(b, "backfill_timestamp", None)
        if created is not None and created < since.timestamp():
            continue
        backfills.append({"id": b.backfill_id, "status": b.status.value, "created_at": _ts(created),
                          "title": getattr(b, "title", None), "partitions": len(b.partition_names or [])
                          if getattr(b, "partition_names", None) is not None else None})
    sensors = []
    for state in instance.all_instigator_state():
        ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
        last = ticks[0] if ticks else None
        sensors.append({"name": state.instigator_name, "type": state.instigator_type.value,
                        "status": state.status.value, "last_tick": _ts(last.timestamp) if last else None,
                        "last_tick_status": last.status.value if last else None,
                        "last_error": (last.error.message.strip().splitlines()[0][:300]
                                       if last is not None and last.error is not None else None)})
    daemons = []
    try:
        beats = instance.get_daemon_heartbeats()
    except Exception:  # noqa: BLE001 - an instance without a daemon store
        beats = {}
    now = time.time()
    for name, hb in sorted(beats.items()):
        daemons.append({"daemon": name, "last_heartbeat": _ts(hb.timestamp), "age_s": round(now - hb.timestamp, 1),
                        "errors": [e.message.strip().splitlines()[0][:300] for e in (hb.errors or [])][:3]})
    return {"hours": hours, "runs": runs, "failures": failures, "backfills": backfills, "sensors": sensors,
            "daemons": daemons}
