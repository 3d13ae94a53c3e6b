"""Live predictions: the ``market_events`` outbox -> one run per bounded batch of events.

``live_predictions_sensor`` (running by default) claims pending events by processing state
(``trading_platform/store/outbox.py``), at most ``TP_LIVE_BATCH_MAX`` (500) per batch and only as many
batches as there are free live run slots (the ``tp/run_kind: live`` limit in ``dagster.yaml``), split by
symbol across them so they run side by side (a symbol whose batch is still in flight is left pending until
it is done: a second batch would only wait on its per-symbol lock and hold up the rest of its batch), so
events that arrive while the live runs are busy gather into the next batch instead of queueing as
runs. Each batch is one run of ``live_predictions_job`` with the event ids and the pinned versions
(``scoring.pins``: every champion and challenger now) in its run configuration, run key
``batch-<id>-attempt-<n>``. When nothing is pending the tick LISTENs on ``tp_market_events`` and
waits up to ``TP_LIVE_WAIT_S`` (4 s) for a NOTIFY, re-checking every ``TP_LIVE_POLL_S`` (1 s) so it
also works where NOTIFY does not arrive: an event arriving between the daemon's ticks (every 5 s)
is claimed at once.

Dagster records the cursor when a run is requested, not when it succeeds, and a run key is unique
for a sensor forever; neither is relied on. A batch claimed but not done after
``TP_LIVE_RETRY_AFTER_S`` (60 s, backing off by attempt) whose runs are neither queued nor running
is re-requested under a new key with the same pins. A run whose process died without reporting (the OOM
killer, a ``kill -9``) is seen at once: the run launcher answers for its process (``live/prefork.py``), so the
sensor neither counts it against the live slots nor waits for it, and run monitoring marks it failed within
``run_monitoring.poll_interval_seconds``; every live run also carries ``dagster/max_runtime``
(``TP_LIVE_MAX_RUNTIME_S``, 120 s), the backstop where its process cannot be seen. The run marks its events done
in the same transaction that writes their predictions. The cursor only remembers when the tick last pruned
processed events (older than ``TP_LIVE_RETENTION_H``, 72 h).
"""


import json
import math
import time
from typing import Dict, List

from dagster import (
    Config,
    DefaultSensorStatus,
    OpExecutionContext,
    Output,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    in_process_executor,
    job,
    op,
    sensor,
)
from dagster._core.storage.dagster_run import NOT_FINISHED_STATUSES, DagsterRunStatus

from ..core.nesting import json_depth_exceeds
from ..resources import MarketDB, MLflowResource, ModelServer

RUN_KIND_TAG = "tp/run_kind"
BATCH_TAG = "tp/live_batch"
LIVE_TAGS = {RUN_KIND_TAG: "live", "dagster/priority": "100", "dagster/max_retries": "3"}
DEFAULT_MAX_RUNS = 2
PRUNE_EVERY_S = 600
OP_NAME = "predict_live_events"


class LiveBatchConfig(Config):
    batch_id: int
    event_ids: List[int]
    pins: Dict[str, Dict[str, str]]


@op(name=OP_NAME,
    description="Features, every pinned version and the events marked done, in one transaction.")
def predict_live_events(context: OpExecutionContext, config: LiveBatchConfig, market_db: MarketDB,
                        model_server: ModelServer, mlflow: MLflowResource):
    from ..live.process import process_batch
    from ..store.outbox import record_error

    if not config.event_ids:  # a paper catch-up run (the sensor's, see _paper_catchup): the paper step only
        _paper_step(context, market_db)
        return Output(None, metadata={"paper_catchup": True})
    retry = int(context.run.tags.get("dagster/retry_number", "0"))
    attempt = int(context.run.tags.get("tp/live_attempt", "1")) + retry
    with market_db.open() as store:
        if retry:  # Dagster's own retry of a failed live run (the sensor's re-requests count in outbox.rerequest)
            from ..store.metrics import count

            count(store.conn, "tp_live_batch_retries_total", {"consumer": "predictions"})  # its own transaction
        try:
            out = process_batch(store, model_server, config.batch_id, config.event_ids, config.pins,
                                run_id=context.run_id, attempt=attempt, client_factory=mlflow.client, log=context.log)
        except Exception as e:
            try:
                record_error(store.conn, config.batch_id, f"run {context.run_id}: {type(e).__name__}: {e}")
            except Exception:  # noqa: BLE001 - the store itself may be what failed
                pass
            raise
    context.log.info("batch %s: %s", config.batch_id, json.dumps(out))
    _paper_step(context, market_db)
    return Output(None, metadata={k: (v if isinstance(v, (int, float, str, bool)) else json.dumps(v))
                                  for k, v in out.items()})


def _paper_step(context, market_db) -> None:
    """After the batch committed its outputs: the live paper runs step on what is now ready (paper/live.py), in their
    own transaction. A failure here is logged, not raised: the batch is done, and the paper events wait for the next
    live run or the sensor's paper catch-up run (tp paper status shows the backlog)."""
    try:
        with market_db.open() as store:
            if not store.conn.execute("SELECT 1 FROM live_consumers WHERE consumer = 'paper'").fetchone():
                return
            from ..paper.live import process

            got = process(store)
        if got["events"]:
            context.log.info("paper: %s", json.dumps(got))
    except Exception as e:  # noqa: BLE001
        context.log.warning(f"paper: the live runs did not step ({type(e).__name__}: {e}); their events wait")


@job(name="live_predictions_job", executor_def=in_process_executor, tags=LIVE_TAGS,
     description="One batch of live events (ids and pinned versions in the run config): the new candles' "
                 "features, every pinned version that applies, rows and done-marks in one transaction.")
def live_predictions_job():
    predict_live_events()


# ---- the sensor --------------------------------------------------------------------------------
_PINS: Dict[str, tuple] = {}  # tracking uri -> (resolved at, pins, versions as dicts)
PINS_TTL_S = 5.0
CHAMPIONS_EVERY_S = 30.0  # how often an idle sensor compares the registry's aliases with the champion history


def current_pins(mlflow: MLflowResource, log, conn=None) -> tuple[dict, list[dict]]:
    """Every registered champion and challenger now, as pins and as versions with their tags (cached for
    a few seconds: the registry is asked at most every PINS_TTL_S; when it is unreachable, the last
    answer is used and the failure logged). With ``conn``, alias moves made outside the platform (the MLflow
    UI or client) are recorded in the champion history on each registry read."""
    from ..models.scoring import pins, resolve_versions

    key, now = mlflow.uri(), time.monotonic()
    hit = _PINS.get(key)
    if hit and now - hit[0] < PINS_TTL_S:
        return hit[1], hit[2]
    try:
        versions = resolve_versions(mlflow.client(), log=log, conn=conn)
    except Exception as e:  # noqa: BLE001 - connection errors differ by store
        if hit is None:
            raise
        log.warning("model registry unreachable (%s); pinning the versions resolved %.0f s ago", e, now - hit[0])
        return hit[1], hit[2]
    as_dicts = [{"name": v.name, "version": v.version, "role": v.role, "tags": v.tags} for v in versions]
    _PINS[key] = (now, pins(versions), as_dicts)
    return _PINS[key][1], _PINS[key][2]


def live_run_limit(instance) -> int:
    """Live runs at once: TP_LIVE_MAX_RUNS, else the ``tp/run_kind: live`` limit of the run queue."""
    from ..live.settings import live_settings

    configured = live_settings().max_runs
    if configured:
        return configured
    try:
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits or []
    except Exception:  # noqa: BLE001 - no run queue (an ephemeral instance): the default
        limits = []
    for lim in limits:
        if lim.get("key") == RUN_KIND_TAG and lim.get("value") == "live":
            return int(lim["limit"])
    return DEFAULT_MAX_RUNS


def worker_dead(instance, run) -> bool:
    """A started run whose process the run launcher reports gone (killed without reporting): run monitoring
    will mark it failed; until then it holds no slot and its batch is not waited for."""
    from dagster._core.launcher.base import WorkerStatus

    launcher = instance.run_launcher
    if run.status != DagsterRunStatus.STARTED or not launcher.supports_check_run_worker_health:
        return False
    try:
        return launcher.check_run_worker_health(run).status == WorkerStatus.FAILED
    except Exception:  # noqa: BLE001 - a launcher that cannot tell: the run counts as alive
        return False


def _in_flight(instance, tags: dict) -> int:
    runs = instance.get_runs(RunsFilter(tags=tags, statuses=NOT_FINISHED_STATUSES))
    return sum(1 for r in runs if not worker_dead(instance, r))


def _request(batch, max_runtime_s: float) -> RunRequest:
    return RunRequest(
        run_key=batch.run_key,
        run_config={"ops": {OP_NAME: {"config": {"batch_id": batch.id, "event_ids": batch.event_ids,
                                                  "pins": batch.pins}}}},
        tags={BATCH_TAG: str(batch.id), "tp/live_attempt": str(batch.attempt), "tp/live_events": str(len(batch.event_ids)),
              "dagster/max_runtime": str(int(max_runtime_s))},
    )


PAPER_CATCHUP_S = 5.0  # paper events ready this long with no live run in flight: a paper-only run steps them


def _paper_catchup(conn, cfg) -> RunRequest | None:
    """A paper-only run of the live job when the ``paper`` consumer has events whose outputs were committed over
    PAPER_CATCHUP_S ago and no live run is in flight to step them (a paper step that failed after its batch, an
    event delivered again, the last candles of a feed that stopped): key ``paper-<newest ready event>-<window>``,
    so a run that failed is asked again after ``TP_LIVE_RETRY_AFTER_S``. None when there is nothing to catch up."""
    row = conn.execute(
        "SELECT max(q.event_id) FROM market_event_queue q JOIN market_event_queue p ON p.event_id = q.event_id AND "
        "p.consumer = 'predictions' AND p.status = 'done' WHERE q.consumer = 'paper' AND q.status = 'pending' AND "
        "p.done_at < clock_timestamp() - make_interval(secs => %s)", (PAPER_CATCHUP_S,)).fetchone()
    if row is None or row[0] is None:
        return None
    window = int(time.time() // max(cfg.retry_after_s, 1.0))
    return RunRequest(run_key=f"paper-{row[0]}-{window}",
                      run_config={"ops": {OP_NAME: {"config": {"batch_id": 0, "event_ids": [], "pins": {}}}}},
                      tags={"tp/paper_catchup": str(row[0]), "dagster/max_runtime": str(int(cfg.max_runtime_s))})


CURSOR_FIELDS = ("pruned_at", "champions_at")  # epoch seconds: when the tick last pruned / read the registry


def read_cursor(raw: str | None, log) -> dict:
    """The tick's cursor, ``{"pruned_at": ..., "champions_at": ...}``. One that cannot be read (edited by hand,
    truncated, not an object) is reset to ``{}``, and a field that is not a finite time up to now is dropped, each
    with a warning: both only say when the tick last pruned and read the registry, so the worst a reset does is do
    those now, whereas a cursor that fails every tick would stop every live batch for good (the cursor is written
    only when a tick succeeds)."""
    if not raw:
        return {}
    if json_depth_exceeds(raw, 4):  # the cursor is one flat object; a deep text would run json.loads deep
        log.warning("live sensor: the cursor %.200r nests too deeply to be one; reset to {}", raw)
        return {}
    try:
        cursor = json.loads(raw)
    except (ValueError, RecursionError) as e:
        log.warning("live sensor: the cursor %.200r is not JSON (%s); reset to {}", raw, e)
        return {}
    if not isinstance(cursor, dict):
        log.warning("live sensor: the cursor %.200r is not a JSON object; reset to {}", raw)
        return {}
    latest = time.time() + PRUNE_EVERY_S  # a time further ahead would put the pruning off for good
    for name in CURSOR_FIELDS:
        if name not in cursor:
            continue
        value = cursor[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value > latest:
            log.warning("live sensor: the cursor's %s %.200r is not a time up to now; reset", name, value)
            del cursor[name]
    return cursor


@sensor(job=live_predictions_job, minimum_interval_seconds=1, default_status=DefaultSensorStatus.RUNNING,
        description="Claims pending market_events in bounded batches and requests one live run per batch; "
                    "waits for a NOTIFY when nothing is pending; re-requests batches not done in time.")
def live_predictions_sensor(context: SensorEvaluationContext, market_db: MarketDB, mlflow: MLflowResource):
    from ..live.settings import live_settings
    from ..store import outbox

    cfg = live_settings()
    cursor = read_cursor(context.cursor, context.log)
    instance = context.instance
    limit = live_run_limit(instance)
    requests: list[RunRequest] = []
    notes: list[str] = []
    with market_db.open() as store:
        conn = store.conn
        if cfg.listen:
            outbox.listen(conn)  # before the first look: nothing slips in between
        if time.time() - cursor.get("pruned_at", 0) >= PRUNE_EVERY_S:
            pruned = outbox.prune(conn, cfg.retention_h)
            from ..store.metrics import fold

            fold(conn)  # the counters' appended deltas (kept out of the transactions that made them)
            cursor["pruned_at"] = time.time()
            if pruned["events"]:
                context.log.info("pruned %d processed events older than %s h", pruned["events"], cfg.retention_h)
        # alias moves made outside the platform (the MLflow UI or client): into the champion history
        if time.time() - cursor.get("champions_at", 0) >= CHAMPIONS_EVERY_S:
            cursor["champions_at"] = time.time()
            try:
                from ..store.champions import sync_from_registry

                for m in sync_from_registry(conn, mlflow.client()):
                    context.log.info("champion history: %s %s %s -> %s (moved outside the platform)",
                                     m["model"], m["alias"], m["from"], m["to"])
            except Exception as e:  # noqa: BLE001 - an unreachable registry must not stop the live path
                context.log.warning("model registry unreachable for the champion history (%s); next try in %s s",
                                    e, CHAMPIONS_EVERY_S)
        # batches claimed but not done in time, and with no run queued or running: a new attempt
        for stale in outbox.stale_batches(conn, cfg.retry_after_s):
            runs = instance.get_runs(RunsFilter(tags={BATCH_TAG: str(stale.id)}))
            if any(r.status in NOT_FINISHED_STATUSES and not worker_dead(instance, r) for r in runs):
                continue
            seen = ", ".join(f"{r.run_id[:8]} {'process gone' if r.status in NOT_FINISHED_STATUSES else r.status.value}"
                             for r in runs) or "no run found"
            batch = outbox.rerequest(conn, stale.id, stale.attempt,
                                     f"attempt {stale.attempt} not done after {cfg.retry_after_s:.0f} s ({seen})")
            if batch is not None and batch.event_ids:
                requests.append(_request(batch, cfg.max_runtime_s))
                notes.append(f"re-requested batch {batch.id} (attempt {batch.attempt}, {len(batch.event_ids)} events)")
        # new batches, as many as there are free live slots
        pins = versions = None

        def free() -> int:
            return limit - _in_flight(instance, {RUN_KIND_TAG: "live"}) - len(requests)

        deadline = time.monotonic() + cfg.wait_s
        while True:
            pending = outbox.has_pending(conn, busy_s=cfg.retry_after_s)
            if pending and free() > 0:
                if pins is None:
                    pins, versions = current_pins(mlflow, context.log, conn)
                # split by symbol over the free slots, so the batches run side by side; a symbol whose batch
                # is still in flight waits for it (a second batch would only wait on its lock)
                for batch in outbox.claim_split(conn, cfg.batch_max, free(), pins, versions,
                                                busy_s=cfg.retry_after_s):
                    requests.append(_request(batch, cfg.max_runtime_s))
                    notes.append(f"batch {batch.id}: {len(batch.event_ids)} events")
                if not requests:  # another claimer holds them: look again a little later
                    time.sleep(min(cfg.poll_s, max(0.0, deadline - time.monotonic())))
            if requests or time.monotonic() >= deadline:
                break
            outbox.wait_for(conn, lambda: outbox.has_pending(conn, busy_s=cfg.retry_after_s) and free() > 0,
                            deadline - time.monotonic(), cfg.poll_s, cfg.listen)
        waiting = not requests and outbox.has_pending(conn)
        slots_busy = waiting and free() <= 0
        if not requests and _in_flight(instance, {RUN_KIND_TAG: "live"}) == 0:
            catchup = _paper_catchup(conn, cfg)
            if catchup is not None:
                requests.append(catchup)
                notes.append("paper catch-up")
    if not requests:
        why = (f"events pending; the {limit} live run slot(s) are busy" if slots_busy else
               "events pending for symbols whose batch is still running" if waiting else "no live event pending")
        return SensorResult(skip_reason=SkipReason(why), cursor=json.dumps(cursor))
    context.log.debug("; ".join(notes))  # the runs themselves say what they did: one line per batch on the console
    return SensorResult(run_requests=requests, cursor=json.dumps(cursor))

