"""``/metrics`` in ``tp serve``: the platform's state for Prometheus, read where it lives.

Backlog, freshness, model outputs, alerts, paper runs and the watchdog are rows in PostgreSQL, so a custom
``prometheus_client`` collector reads them there, one bounded query per collector below (an index probe per
series, or a table whose size is the number of series, strategies or checks, never the history). Counters that
move inside runs (events processed, retries, live latency, ingestion, deliveries) are rows of ``metric_counters``
and ``metric_histograms`` (migration 22), incremented in the transactions that do the work. Timestamps are exported
(Unix seconds), not ages: ``time() - tp_..._timestamp_seconds`` is the age.

The scrape is cached for ``TP_METRICS_CACHE_S`` (default 5 s; 0: every scrape reads). The model registry (MLflow)
is read by a background thread every 60 s, never inside a scrape. A collector that fails drops its own series and
increments ``tp_metrics_collect_errors_total{collector}``; the scrape itself never fails.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from datetime import datetime, timedelta, timezone

from ..errors import InvalidInput, redact_secrets

log = logging.getLogger(__name__)

G, C, H = "gauge", "counter", "histogram"
# family -> (type, labels, meaning): the catalogue (docs/metrics.md lists the same)
CATALOGUE: dict[str, tuple[str, tuple[str, ...], str]] = {
    "tp_live_backlog_events": (G, ("consumer",), "live events not yet done by the consumer (tp live status' backlog)"),
    "tp_live_batches_in_flight": (G, ("consumer",), "live batches requested and not done"),
    "tp_live_oldest_pending_timestamp_seconds": (G, ("consumer",), "insert time of the oldest event not done"),
    "tp_live_events_processed_total": (C, ("consumer",), "live events marked done"),
    "tp_live_batch_retries_total": (C, ("consumer",), "live batches attempted again (re-requested by the "
                                                                    "sensor, or a run retried by Dagster)"),
    "tp_live_batch_errors_total": (C, ("consumer",), "live runs that failed with an error on their batch"),
    "tp_live_latency_seconds": (H, ("consumer",), "seconds from a live candle's insert to the commit of the "
                                                  "transaction that did its event"),
    "tp_ohlcv_last_close_timestamp_seconds": (G, ("symbol", "timeframe"), "close time of the newest stored candle "
                                                                          "(its open time + the timeframe)"),
    "tp_ingest_rows_total": (C, ("source", "outcome"), "candles written, by source kind and outcome (inserted, "
                                                       "updated, unchanged, quarantined)"),
    "tp_collector_connected": (G, ("exchange",), "1 when every collector connection of the exchange is connected"),
    "tp_collector_last_frame_timestamp_seconds": (G, ("exchange",), "the exchange's newest frame received"),
    "tp_collector_reconnects_total": (C, ("exchange", "symbol", "timeframe"), "collector reconnections"),
    "tp_collector_gap_candles_total": (C, ("exchange", "symbol", "timeframe"), "candles missed by the stream and "
                                                                               "healed from the REST history"),
    "tp_model_champion_version": (G, ("model",), "the registry version holding @champion"),
    "tp_model_champion_since_timestamp_seconds": (G, ("model",), "when that version took @champion"),
    "tp_model_output_last_timestamp_seconds": (G, ("table", "model"), "candle time of the model's newest output"),
    "tp_alerts_total": (C, ("model", "status"), "alerts reaching each status (a re-judged alert counts again)"),
    "tp_alert_deliveries_total": (C, ("destination", "outcome"), "deliveries delivered, dead, stale, or failed "
                                                                 "(an attempt to be retried)"),
    "tp_alert_deliveries_pending": (G, ("destination",), "deliveries waiting to be sent"),
    "tp_alert_oldest_pending_evaluation_timestamp_seconds": (G, (), "creation time of the oldest alert still "
                                                                    "waiting for its outcome"),
    "tp_paper_equity": (G, ("strategy",), "a running live paper strategy's equity at its last step"),
    "tp_paper_open_positions": (G, ("strategy",), "its open positions"),
    "tp_paper_risk_locks": (G, ("strategy",), "its risk locks in force (drawdown halt, daily loss, stop guard)"),
    "tp_watchdog_check_failing": (G, ("check",), "1 while the watchdog check fails, 0 when it passes"),
    "tp_watchdog_check_since_timestamp_seconds": (G, ("check",), "when the failing check's condition began"),
    "tp_rag_documents": (G, ("state",), "knowledge-base documents by state (embedded, unembedded, deleted)"),
    "tp_rag_index_built_timestamp_seconds": (G, ("state",), "when the current FAISS index was built"),
    "tp_dagster_runs": (G, ("status",), "Dagster runs in flight by status, and those finished in the last 24 h"),
    "tp_dagster_daemon_heartbeat_timestamp_seconds": (G, ("daemon",), "each Dagster daemon's last heartbeat"),
    "tp_dagster_sensor_last_tick_timestamp_seconds": (G, ("sensor",), "each sensor's last tick"),
    "tp_api_requests_total": (C, ("face", "tool", "outcome"), "requests to this tp serve (ok, error, refused)"),
    "tp_api_request_duration_seconds": (H, ("face", "tool", "outcome"), "their duration"),
    "tp_metrics_collect_errors_total": (C, ("collector",), "collectors of this exporter that failed"),
}
API_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
REGISTRY_REFRESH_S = 60.0
IN_FLIGHT = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")


def cache_s() -> float:
    raw = os.environ.get("TP_METRICS_CACHE_S", "5")
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(f"TP_METRICS_CACHE_S must be seconds (0 turns the cache off), got {raw!r}",
                           field="TP_METRICS_CACHE_S") from None
    if not 0 <= value <= 3600:
        raise InvalidInput(f"TP_METRICS_CACHE_S must be from 0 to 3600 seconds, got {raw!r}",
                           field="TP_METRICS_CACHE_S")
    return value


@functools.lru_cache(maxsize=65536)
def _redacted(v: str) -> str:
    return redact_secrets(v)[:200]


def _label(v) -> str:
    """A label value: text, never a URL with its credentials or a token (redacted; the same values come back every
    scrape, so each is redacted once)."""
    return "" if v is None else _redacted(str(v))


def _epoch(t) -> float | None:
    return None if t is None else t.timestamp()


# ---- the API's own requests (this process) ----------------------------------------------------------------------
class Requests:
    """``tp_api_requests_total`` and ``tp_api_request_duration_seconds`` of this process, by face, tool, outcome."""

    def __init__(self):
        self._lock = threading.Lock()
        self._by: dict[tuple[str, str, str], list] = {}  # key -> [count, sum, bucket counts (non-cumulative)]

    def observe(self, face: str, tool: str, outcome: str, seconds: float) -> None:
        import bisect

        i = bisect.bisect_left(API_BOUNDS, seconds)
        with self._lock:
            row = self._by.setdefault((face, tool, outcome), [0, 0.0, [0] * (len(API_BOUNDS) + 1)])
            row[0] += 1
            row[1] += seconds
            row[2][i] += 1

    def snapshot(self) -> list[tuple[tuple[str, str, str], int, float, list[int]]]:
        with self._lock:
            return [(k, v[0], v[1], list(v[2])) for k, v in sorted(self._by.items())]


REQUESTS = Requests()


# ---- the collectors ----------------------------------------------------------------------------------------------
class _Q:
    """The scrape's connection, counting its queries (``queries_per_scrape`` of the benchmark)."""

    def __init__(self, conn):
        self.conn, self.n = conn, 0

    def rows(self, sql: str, params=None) -> list[tuple]:
        self.n += 1
        return self.conn.execute(sql, params).fetchall()


def _live(q: _Q, out) -> None:
    for consumer, backlog, in_flight, oldest in q.rows(
            "SELECT c.consumer, (SELECT count(*) FROM market_event_queue q WHERE q.consumer = c.consumer AND "
            "q.status <> 'done'), (SELECT count(*) FROM live_batches b WHERE b.consumer = c.consumer AND b.status <> "
            "'done'), (SELECT min(e.created_at) FROM market_event_queue q JOIN market_events e ON e.id = q.event_id "
            "WHERE q.consumer = c.consumer AND q.status <> 'done') FROM live_consumers c ORDER BY 1"):
        out.gauge("tp_live_backlog_events", [consumer], backlog)
        out.gauge("tp_live_batches_in_flight", [consumer], in_flight)
        if oldest is not None:
            out.gauge("tp_live_oldest_pending_timestamp_seconds", [consumer], oldest.timestamp())


LIVE_COUNTERS = ("tp_live_events_processed_total", "tp_live_batch_retries_total", "tp_live_batch_errors_total")


def _counters(q: _Q, out) -> None:
    # the folded counters, the deltas appended since the last fold, and 0 for each live consumer's counters (a
    # first increment is then an increase Prometheus sees)
    for family, labels, value in q.rows(
            "SELECT family, labels, sum(v) FROM (SELECT family, labels, value AS v FROM metric_counters UNION ALL "
            "SELECT family, labels, delta FROM metric_deltas UNION ALL SELECT f, jsonb_build_object('consumer', "
            "c.consumer), 0 FROM live_consumers c CROSS JOIN unnest(%s::text[]) AS f) x GROUP BY 1, 2 ORDER BY 1, 2",
            (list(LIVE_COUNTERS),)):
        spec = CATALOGUE.get(family)
        if spec is None:
            continue
        values = [labels.get(k, "") for k in spec[1]]
        (out.gauge if spec[0] == G else out.counter)(family, values, value)


def _histograms(q: _Q, out) -> None:
    for family, labels, bounds, counts, total, n in q.rows(
            "SELECT family, labels, bounds, counts, sum, count FROM metric_histograms ORDER BY 1, 2"):
        spec = CATALOGUE.get(family)
        if spec is not None:
            out.histogram(family, [labels.get(k, "") for k in spec[1]], list(bounds), list(counts), total)


def _ohlcv(q: _Q, out) -> None:
    # one backward index probe per listed series (the primary key): the same cost with a month or years stored
    for symbol, tf, last in q.rows(
            "SELECT s.symbol, t.tf, (SELECT o.ts FROM ohlcv o WHERE o.symbol = s.symbol AND o.timeframe = t.tf "
            "ORDER BY o.ts DESC LIMIT 1) + make_interval(secs => tp_timeframe_seconds(t.tf)) FROM symbols s "
            "CROSS JOIN LATERAL unnest(s.timeframes) AS t(tf) WHERE s.enabled ORDER BY 1, 2"):
        if last is not None:
            out.gauge("tp_ohlcv_last_close_timestamp_seconds", [symbol, tf], last.timestamp())


def _collector(q: _Q, out) -> None:
    for exchange, connected, last_frame in q.rows(
            "SELECT exchange, bool_and(connected), max(last_frame_at) FROM collector_status WHERE kind = 'connection' "
            "GROUP BY 1 ORDER BY 1"):
        out.gauge("tp_collector_connected", [exchange], 1.0 if connected else 0.0)
        if last_frame is not None:
            out.gauge("tp_collector_last_frame_timestamp_seconds", [exchange], last_frame.timestamp())


def _outputs(q: _Q, out) -> None:
    for table, model, last in q.rows("SELECT output_table, model_name, max(last_ts) FROM output_series "
                                     "GROUP BY 1, 2 ORDER BY 1, 2"):
        out.gauge("tp_model_output_last_timestamp_seconds", [table, model], last.timestamp())


def _alerts(q: _Q, out) -> None:
    rows = q.rows(
        "SELECT d.name, (SELECT count(*) FROM alert_deliveries x WHERE x.destination_id = d.id AND x.status IN "
        "('pending', 'sending')) FROM alert_destinations d UNION ALL SELECT NULL, extract(epoch FROM min(created_at)) "
        "FROM alerts WHERE status = 'pending'")
    for name, value in rows:
        if name is not None:
            out.gauge("tp_alert_deliveries_pending", [name], value)
        elif value is not None:
            out.gauge("tp_alert_oldest_pending_evaluation_timestamp_seconds", [], float(value))


def _paper(q: _Q, out) -> None:
    from dataclasses import replace

    from ..paper.engine import Engine
    from ..paper.live import risk_locks
    from ..paper.spec import parse

    for run_id, name, cash, stepped_to, state, raw, equity in q.rows(
            "SELECT r.run_id, r.strategy_name, r.cash, r.stepped_to, r.state, s.spec, (SELECT e.equity FROM "
            "paper_equity e WHERE e.run_id = r.run_id ORDER BY e.ts DESC LIMIT 1) FROM paper_runs r JOIN strategies s "
            "ON s.name = r.strategy_name AND s.version = r.strategy_version WHERE r.mode = 'live' AND r.status = "
            "'running' ORDER BY r.strategy_name"):
        out.gauge("tp_paper_equity", [name], float(equity if equity is not None else cash))
        try:  # one run whose state cannot be read (an engine of another version) hides only its own book
            e, _ = Engine.resume(replace(parse(raw), cash=float(cash)), run_id, bytes(state))
        except Exception as err:  # noqa: BLE001
            log.warning("metrics: paper run %s: its state cannot be read (%s)", run_id, type(err).__name__)
            continue
        out.gauge("tp_paper_open_positions", [name], len(e.positions))
        out.gauge("tp_paper_risk_locks", [name], len(risk_locks(e.book, stepped_to)))


def _watchdog(q: _Q, out) -> None:
    from ..watchdog.checks import thresholds

    # a state not looked at for 10 looks (the watchdog stopped) is no longer the check's: no value, not a stale one
    stale_s = 10 * thresholds().interval_s
    for name, state, since in q.rows("SELECT name, state, since FROM watchdog_state WHERE checked_at > "
                                     "clock_timestamp() - make_interval(secs => %s) ORDER BY name", (stale_s,)):
        if state == "unknown":
            continue  # it could not tell: no value rather than a wrong one
        out.gauge("tp_watchdog_check_failing", [name], 1.0 if state == "failing" else 0.0)
        if state == "failing" and since is not None:
            out.gauge("tp_watchdog_check_since_timestamp_seconds", [name], since.timestamp())


def _rag_index(out) -> None:
    from ..rag.index import current
    from ..rag.settings import rag_settings

    m = current(rag_settings().index_dir)
    if m is not None and m.built_at:
        built = m.built_at if isinstance(m.built_at, datetime) else datetime.fromisoformat(str(m.built_at))
        out.gauge("tp_rag_index_built_timestamp_seconds", ["current"], built.timestamp())


def _dagster(instance, out) -> int:
    """Runs by status, daemon heartbeats, sensors' last ticks: a fixed number of calls on Dagster's storage."""
    from dagster import DagsterRunStatus, RunsFilter

    calls = 0
    day_ago = datetime.now(timezone.utc) - timedelta(hours=24)
    for status in IN_FLIGHT + FINISHED:  # finished: by their update time (the index Dagster keeps for it)
        flt = RunsFilter(statuses=[DagsterRunStatus(status)], updated_after=day_ago if status in FINISHED else None)
        out.gauge("tp_dagster_runs", [status], instance.get_runs_count(flt))
        calls += 1
    for daemon, hb in sorted(instance.get_daemon_heartbeats().items()):
        out.gauge("tp_dagster_daemon_heartbeat_timestamp_seconds", [daemon], hb.timestamp)
    states = [s for s in instance.all_instigator_state() if s.instigator_type.value == "SENSOR"]
    calls += 2
    if states:
        ticks = instance.get_batch_ticks([s.selector_id for s in states], limit=1)
        calls += 1
        for s in sorted(states, key=lambda s: s.instigator_name):
            last = ticks.get(s.selector_id) or []
            if last:
                out.gauge("tp_dagster_sensor_last_tick_timestamp_seconds", [s.instigator_name], last[0].timestamp)
    return calls


STORE_COLLECTORS = {"live": _live, "counters": _counters, "histograms": _histograms, "ohlcv": _ohlcv,
                    "collector": _collector, "outputs": _outputs, "alerts": _alerts, "paper": _paper,
                    "watchdog": _watchdog}


class _Out:
    """The families of one scrape, built as the collectors add samples."""

    def __init__(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        self.families = {}
        for name, (kind, labels, doc) in CATALOGUE.items():
            cls = {G: GaugeMetricFamily, C: CounterMetricFamily, H: HistogramMetricFamily}[kind]
            self.families[name] = cls(name, doc, labels=list(labels))

    def gauge(self, name, labels, value) -> None:
        self.families[name].add_metric([_label(v) for v in labels], float(value))

    counter = gauge

    def histogram(self, name, labels, bounds, counts, total) -> None:
        buckets, acc = [], 0.0
        for b, c in zip(list(bounds) + [float("inf")], counts):
            acc += c
            buckets.append(("+Inf" if b == float("inf") else f"{b:g}", acc))
        self.families[name].add_metric([_label(v) for v in labels], buckets, float(total))


class PlatformCollector:
    """The custom collector ``tp serve`` registers: ``collect()`` yields the catalogue's families."""

    def __init__(self, pool, instance=None, cache: float | None = None, registry_refresh_s: float = REGISTRY_REFRESH_S):
        self.pool = pool
        self._instance = instance
        self.cache = cache_s() if cache is None else cache
        self.refresh_s = registry_refresh_s
        # every collector from 0, so its first failure is an increase Prometheus sees
        self.errors: dict[str, int] = {name: 0 for name in (*STORE_COLLECTORS, "dagster", "rag", "registry")}
        self.last_queries = 0
        self._cached: tuple[float, list] | None = None
        self._lock = threading.Lock()
        self._champions: list[tuple[str, float, float | None]] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- the registry, in the background
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._refresh_loop, name="tp-metrics-registry", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _refresh_loop(self) -> None:
        self.refresh_registry()  # its first MLflow store and the first scrape's instance take turns (STORAGE_SETUP)
        while not self._stop.wait(self.refresh_s):
            self.refresh_registry()

    def refresh_registry(self) -> None:
        """The champions: the registry's @champion of each model, since when (the champion history)."""
        try:
            from ..api._context import mlflow_client
            from ..models.registry import iter_registered_models

            versions = {}
            for rm in iter_registered_models(mlflow_client()):
                v = (rm.aliases or {}).get("champion")
                if v is not None:
                    versions[rm.name] = str(v)
            with self.pool.store() as s:
                since = {n: (v, t) for n, v, t in s.conn.execute(
                    "SELECT model_name, version, valid_from FROM model_champions WHERE alias = 'champion' AND "
                    "valid_to IS NULL").fetchall()}
            self._champions = [(n, float(v), _epoch(since[n][1]) if since.get(n, (None,))[0] == v else None)
                               for n, v in sorted(versions.items()) if v.isdigit()]
        except Exception as e:  # noqa: BLE001 - its series dropped, counted; the next refresh tries again
            self._champions = None
            self._failed("registry", e)

    def _failed(self, name: str, e: BaseException) -> None:
        with self._lock:
            self._failed_locked(name, e)

    def instance(self):
        if self._instance is None:
            from ..api._context import instance

            self._instance = instance()
        return self._instance

    # -- a scrape
    def describe(self):
        return []  # no collect() at registration

    def collect(self):
        now = time.monotonic()
        cached = self._cached
        if self.cache > 0 and cached is not None and now - cached[0] < self.cache:
            return iter(cached[1])
        with self._lock:  # one scrape reads at a time; those waiting get its result
            cached = self._cached
            if self.cache > 0 and cached is not None and time.monotonic() - cached[0] < self.cache:
                return iter(cached[1])
            families = self._scrape()
            self._cached = (time.monotonic(), families)
            return iter(families)

    def _scrape(self) -> list:
        self.start()
        out = _Out()
        queries = 0
        try:
            with self.pool.store() as s:
                for name, fn in STORE_COLLECTORS.items():
                    q = _Q(s.conn)
                    part = _Out()
                    try:
                        fn(q, part)
                    except Exception as e:  # noqa: BLE001 - this collector's series dropped, the scrape goes on
                        self._failed_locked(name, e)
                    else:
                        _merge(out, part)
                    queries += q.n
        except Exception as e:  # noqa: BLE001 - the store is down: every store collector failed
            for name in STORE_COLLECTORS:
                self._failed_locked(name, e)
        for name, fn in (("dagster", lambda part: _dagster(self.instance(), part)), ("rag", _rag_index)):
            part = _Out()
            try:
                got = fn(part)
            except Exception as e:  # noqa: BLE001
                self._failed_locked(name, e)
            else:
                _merge(out, part)
                if name == "dagster":
                    queries += got
        for model, version, since in self._champions or []:
            out.gauge("tp_model_champion_version", [model], version)
            if since is not None:
                out.gauge("tp_model_champion_since_timestamp_seconds", [model], since)
        for (face, tool, outcome), n, total, counts in REQUESTS.snapshot():
            out.counter("tp_api_requests_total", [face, tool, outcome], n)
            out.histogram("tp_api_request_duration_seconds", [face, tool, outcome], API_BOUNDS, counts, total)
        for name, n in sorted(self.errors.items()):
            out.counter("tp_metrics_collect_errors_total", [name], n)
        self.last_queries = queries
        return list(out.families.values())

    def _failed_locked(self, name: str, e: BaseException) -> None:
        self.errors[name] = self.errors.get(name, 0) + 1
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        log.warning("metrics: the %s collector failed: %s", name, redact_secrets(text))


def _merge(out: _Out, part: _Out) -> None:
    for name, fam in part.families.items():
        out.families[name].samples.extend(fam.samples)


def render(collector: PlatformCollector) -> bytes:
    """The exposition text of one scrape."""
    from prometheus_client import CollectorRegistry, generate_latest

    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    return generate_latest(reg)
