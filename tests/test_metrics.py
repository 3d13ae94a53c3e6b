"""``/metrics`` (issue 28) on a real PostgreSQL, Dagster and MLflow: every family of the catalogue with its type and
labels, passing ``promtool check metrics`` and prometheus_client's parser; values equal to the database's (the
backlog ``tp live status`` shows, a series' last close, the latency histogram's count against the events done after
``tp live feed``); counters monotonic across a retried batch, the outbox's prune, a collector restart and a new
exporter; a failing collector dropping only its own series; nothing secret in a label."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import timedelta

import psycopg
import pytest
from dagster import instance_for_test
from prometheus_client.parser import text_string_to_metric_families

from trading_platform.core.symbols import SymbolInfo
from trading_platform.faces.metrics import CATALOGUE, PlatformCollector, render
from trading_platform.faces.reads import ReadPool
from trading_platform.resources import MarketDB
from trading_platform.store import outbox

from conftest import signed_versions
from test_live import candles, empty_registry, live_env, run_request, tick  # noqa: F401 (fixtures)
from test_serve import _port


def scrape(dsn, instance=None, cache=0.0) -> tuple[str, PlatformCollector]:
    pool = ReadPool(dsn)
    try:
        col = PlatformCollector(pool, instance=instance, cache=cache)
        col._champions = []  # the registry thread is not started here: what it reads has its own test
        col.start = lambda: None
        return render(col).decode(), col
    finally:
        pool.close()


def samples(text: str) -> dict[tuple, float]:
    """{(sample name, sorted labels): value}"""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text, name, **labels) -> float | None:
    return samples(text).get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def platform(store, dsn, empty_registry, live_env, tp_env, tmp_path):  # noqa: F811
    from trading_platform.resources import ModelServer

    store.add_symbol(SymbolInfo.create("BTC/USDT", timeframes=["5m"], live=True))
    store.add_symbol(SymbolInfo.create("ETH/USDT", timeframes=["5m"], live=True))
    store.ingest_frame("BTC/USDT", "5m", candles("2025-01-01", 10), source="file")
    with instance_for_test() as instance:
        yield store, instance, {"market_db": MarketDB(database_url=dsn), "mlflow": empty_registry,
                                "model_server": ModelServer(tracking_uri=empty_registry.tracking_uri,
                                                            cache_dir=str(tmp_path / "cache"), device="cpu")}


def tp(env, *args):
    p = subprocess.run([sys.executable, "-m", "trading_platform.cli", *args, "--json"], env=env,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def seed_alerts(c) -> None:
    """A rule, a webhook destination named ops-hook, three pending pump alerts and two deliveries."""
    c.execute("INSERT INTO alert_rules (name, model_name, threshold) VALUES ('r', 'pump_xgb', 0.5)")
    c.execute("INSERT INTO alert_destinations (name, kind, url_env) VALUES ('ops-hook', 'webhook', 'OPS_URL')")
    for i in range(3):
        c.execute(
            "INSERT INTO alerts (rule_id, model_name, model_version, symbol, timeframe, ts, candle_close, "
            "created_at, role, value, current_value, threshold, side, target, kind, horizon, entry, status, send) "
            "VALUES (1, 'pump_xgb', '1', 'BTC/USDT', '5m', %s, %s, now(), 'champion', 0.9, 0.9, 0.5, 'above', "
            "'t', 'pump', 12, 100, 'pending', 'send')",
            (f"2025-01-01 00:0{i}+00", f"2025-01-01 00:0{i + 5}+00"))
    c.execute("INSERT INTO alert_deliveries (destination_id, alert_id, key, type, payload) "
              "VALUES (1, 1, 'k1', 'alert', '{}'), (1, 2, 'k2', 'alert', '{}')")


# families a fresh platform has no sample of here: a running paper strategy (tests/test_paper_live.py reads them),
# the daemon's heartbeats and sensor ticks (no daemon runs), a built FAISS index, requests to a tp serve
MAY_BE_EMPTY = {"tp_paper_equity", "tp_paper_open_positions", "tp_paper_risk_locks",
                "tp_dagster_daemon_heartbeat_timestamp_seconds", "tp_dagster_sensor_last_tick_timestamp_seconds",
                "tp_rag_index_built_timestamp_seconds", "tp_api_requests_total", "tp_api_request_duration_seconds"}


def test_every_family_of_the_catalogue_with_its_type_and_labels_and_promtool_accepts_it(platform, dsn, tmp_path):
    store, instance, res = platform
    with psycopg.connect(dsn, autocommit=True) as c:
        seed_alerts(c)
        c.execute("UPDATE alert_deliveries SET status = 'delivered' WHERE key = 'k1'")
        c.execute("INSERT INTO rag_documents (doc_key, kind, text) VALUES ('n1', 'note', 'x')")
        c.execute("INSERT INTO collector_status (exchange, kind, name, symbol, timeframe, state, connected, "
                  "last_frame_at, reconnects, gap_candles) VALUES ('binance', 'connection', 'binance#0', NULL, NULL, "
                  "'streaming', true, now(), 1, 0), ('binance', 'series', 'BTC/USDT 5m', 'BTC/USDT', '5m', "
                  "'streaming', true, now(), 0, 2)")
        c.execute("INSERT INTO watchdog_state (name, state, runner, since, checked_at) VALUES ('data_stale', "
                  "'failing', 'sensor', now(), now())")
        c.execute("INSERT INTO output_series VALUES ('predictions', 'pump_xgb', '1', 'BTC/USDT', '5m', now(), now())")
        c.execute("INSERT INTO market_events (symbol, timeframe, ts, change, source) VALUES "
                  "('BTC/USDT', '5m', '2025-01-01', 'inserted', 'test'), "
                  "('BTC/USDT', '5m', '2025-01-01 00:05', 'inserted', 'test')")
        c.execute("INSERT INTO market_event_queue (consumer, event_id) SELECT 'predictions', id FROM market_events")
        c.execute("UPDATE market_event_queue SET status = 'done', done_at = now() WHERE event_id = "
                  "(SELECT min(event_id) FROM market_event_queue)")
        c.execute("SELECT tp_count_events_done('predictions', array_agg(event_id)) FROM market_event_queue")
    pool = ReadPool(dsn)
    col = PlatformCollector(pool, instance=instance, cache=0)
    col._champions, col.start = [("pump_xgb", 1.0, 1.7e9)], (lambda: None)
    text = render(col).decode()
    pool.close()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    errors = {s.labels["collector"]: s.value for s in fams["tp_metrics_collect_errors"].samples}
    assert set(errors) >= {"live", "ohlcv", "paper", "dagster", "registry"} and not any(errors.values()), errors
    for name, (kind, labels, _) in CATALOGUE.items():
        base = name[:-len("_total")] if kind == "counter" else name
        assert base in fams, f"{name} missing"
        assert fams[base].type == kind, name
        assert fams[base].samples or name in MAY_BE_EMPTY, f"{name}: no sample to check its labels on"
        for s in fams[base].samples:
            assert set(s.labels) - {"le"} == set(labels), (name, s.labels)
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus (the CI script installs it)"
    p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_values_are_the_databases_and_counters_survive_a_retry_a_prune_and_a_new_exporter(platform, dsn, tp_env,
                                                                                        live_env):
    import trading_platform.live.process as process

    store, instance, res = platform
    fed = tp(tp_env, "live", "feed", "--symbols", "BTC/USDT,ETH/USDT", "--rate", "50", "--count", "6")
    assert fed["events"] == 6
    text, col = scrape(dsn, instance)
    st = tp(tp_env, "live", "status")
    assert value(text, "tp_live_backlog_events", consumer="predictions") == st["backlog"] == 6
    with psycopg.connect(dsn) as c:
        oldest = c.execute("SELECT extract(epoch FROM min(created_at))::float8 FROM market_events").fetchone()[0]
    assert value(text, "tp_live_oldest_pending_timestamp_seconds", consumer="predictions") == pytest.approx(oldest)
    with psycopg.connect(dsn) as c:
        for sym, last in c.execute("SELECT symbol, max(ts) FROM ohlcv GROUP BY 1").fetchall():
            assert value(text, "tp_ohlcv_last_close_timestamp_seconds", symbol=sym, timeframe="5m") == \
                (last + timedelta(minutes=5)).timestamp()
    # the historical load and the live feed, by source kind and outcome
    assert value(text, "tp_ingest_rows_total", source="file", outcome="inserted") == 10
    assert value(text, "tp_ingest_rows_total", source="tp live feed", outcome="inserted") == 6
    assert value(text, "tp_live_events_processed_total", consumer="predictions") == 0  # there from 0

    # the sensor's runs fail once (their batches roll back: nothing counted), then the retries do them
    reqs = tick(instance, res).run_requests
    assert reqs

    def broken(*a, **k):
        raise RuntimeError("model server fell over")

    real = process.refresh_features
    live_env.setattr(process, "refresh_features", broken)
    for req in reqs:
        assert not run_request(req, instance=instance, resources=res, raise_on_error=False).success
    live_env.setattr(process, "refresh_features", real)
    text, _ = scrape(dsn, instance)
    assert value(text, "tp_live_events_processed_total", consumer="predictions") == 0
    assert value(text, "tp_live_batch_errors_total", consumer="predictions") == len(reqs)
    live_env.setenv("TP_LIVE_RETRY_AFTER_S", "0")
    again = tick(instance, res).run_requests
    assert len(again) == len(reqs)
    for req in again:
        assert run_request(req, instance=instance, resources=res).success
    for req in reqs:  # a late duplicate of a first attempt does nothing and counts nothing
        assert run_request(req, instance=instance, resources=res).success
    text, _ = scrape(dsn, instance)
    with psycopg.connect(dsn) as c:
        done = c.execute("SELECT count(*) FROM market_event_queue WHERE consumer = 'predictions' AND status = 'done'"
                         ).fetchone()[0]
        # each event waited at least until its batch's commit record was written (the count is the statement after)
        lat = [r[0] for r in c.execute(
            "SELECT extract(epoch FROM m.committed_at - e.created_at)::float8 FROM live_commits m CROSS JOIN "
            "unnest(m.event_ids) AS i JOIN market_events e ON e.id = i").fetchall()]
    assert done == 6
    assert value(text, "tp_live_events_processed_total", consumer="predictions") == done
    assert value(text, "tp_live_latency_seconds_count", consumer="predictions") == done
    assert len(lat) == done and sum(lat) <= value(text, "tp_live_latency_seconds_sum", consumer="predictions") \
        <= sum(lat) + done * 0.5
    buckets = [value(text, "tp_live_latency_seconds_bucket", consumer="predictions", le=le)
               for le in ("0.5", "1", "2", "5", "10", "20", "30", "60", "120", "300", "+Inf")]
    assert buckets == sorted(buckets) and buckets[-1] == done  # cumulative, every event in +Inf
    assert buckets[buckets.index(next(b for b in buckets if b))] >= 1
    assert value(text, "tp_live_batch_retries_total", consumer="predictions") == len(reqs)
    assert value(text, "tp_live_backlog_events", consumer="predictions") == 0
    before = {k: v for k, v in samples(text).items() if k[0].endswith(("_total", "_count", "_sum", "_bucket"))}

    # the outbox pruned to nothing, a collector restarted, and a new exporter (a restarted tp serve)
    with psycopg.connect(dsn, autocommit=True) as c:
        pruned = outbox.prune(c, retention_h=0)
        assert pruned["events"] == 6
        # a collector run: its connection row counts reconnects, its series rows the gap candles (the connection
        # row carries the sum of its series' gaps too: not counted twice)
        c.execute("INSERT INTO collector_status (exchange, kind, name, state, reconnects, gap_candles) VALUES "
                  "('binance', 'connection', 'binance#0', 'streaming', 2, 0), "
                  "('binance', 'series', 'BTC/USDT 5m', 'streaming', 0, 0)")
        c.execute("UPDATE collector_status SET symbol = 'BTC/USDT', timeframe = '5m', gap_candles = 3 "
                  "WHERE kind = 'series'")
        c.execute("UPDATE collector_status SET reconnects = 5, gap_candles = 3 WHERE kind = 'connection'")
        c.execute("DELETE FROM collector_status")  # a new collector run starts its own rows from 0
        c.execute("INSERT INTO collector_status (exchange, kind, name, state, reconnects, symbol, timeframe, "
                  "gap_candles) VALUES ('binance', 'connection', 'binance#0', 'streaming', 1, NULL, NULL, 4), "
                  "('binance', 'series', 'BTC/USDT 5m', 'streaming', 0, 'BTC/USDT', '5m', 4)")
    text, _ = scrape(dsn, instance)
    after = samples(text)
    for k, v in before.items():
        assert after.get(k) == v, k
    assert value(text, "tp_collector_reconnects_total", exchange="binance", symbol="", timeframe="") == 6
    assert value(text, "tp_collector_gap_candles_total", exchange="binance", symbol="BTC/USDT", timeframe="5m") == 7
    assert value(text, "tp_collector_gap_candles_total", exchange="binance", symbol="", timeframe="") is None
    # the triggers' deltas folded into the counters (the live sensor, the maintenance job): the same figures
    from trading_platform.store.metrics import fold

    with psycopg.connect(dsn, autocommit=True) as c:
        assert fold(c) > 0
        assert c.execute("SELECT count(*) FROM metric_deltas").fetchone()[0] == 0
    assert samples(scrape(dsn, instance)[0]) == samples(text)


def test_alerts_deliveries_and_documents_are_counted_as_they_change(platform, dsn):
    store, instance, res = platform
    with psycopg.connect(dsn, autocommit=True) as c:
        seed_alerts(c)
        c.execute("UPDATE alerts SET status = 'success' WHERE id = 1")
        c.execute("UPDATE alerts SET current_value = 0.8")  # no status change: nothing counted
        c.execute("UPDATE alert_deliveries SET last_error_at = now(), last_error = 'HTTP 500', attempts = 1 "
                  "WHERE key = 'k1'")
        c.execute("UPDATE alert_deliveries SET status = 'delivered' WHERE key = 'k1'")
        # the watchdog's own messages are inserted already decided
        c.execute("INSERT INTO alert_deliveries (destination_id, key, type, payload, status) "
                  "VALUES (1, 'w1', 'watchdog', '{}', 'dead')")
        c.execute("INSERT INTO rag_documents (doc_key, kind, text) SELECT 'n' || g, 'note', 'x' "
                  "FROM generate_series(1, 4) g")
        c.execute("UPDATE rag_documents SET embedding = '\\x00' WHERE id <= 2")
        c.execute("UPDATE rag_documents SET deleted_at = now() WHERE id = 4")
        c.execute("DELETE FROM rag_documents WHERE id = 3")
    text, _ = scrape(dsn, instance)
    assert value(text, "tp_alerts_total", model="pump_xgb", status="pending") == 3
    assert value(text, "tp_alerts_total", model="pump_xgb", status="success") == 1
    assert value(text, "tp_alert_deliveries_total", destination="ops-hook", outcome="failed") == 1
    assert value(text, "tp_alert_deliveries_total", destination="ops-hook", outcome="delivered") == 1
    assert value(text, "tp_alert_deliveries_total", destination="ops-hook", outcome="dead") == 1
    assert value(text, "tp_alert_deliveries_pending", destination="ops-hook") == 1
    with psycopg.connect(dsn) as c:
        oldest = c.execute("SELECT extract(epoch FROM min(created_at))::float8 FROM alerts WHERE status = 'pending'"
                           ).fetchone()[0]
        states = dict(c.execute("SELECT tp_rag_state(deleted_at, embedding), count(*) FROM rag_documents GROUP BY 1"
                                ).fetchall())
    assert value(text, "tp_alert_oldest_pending_evaluation_timestamp_seconds") == pytest.approx(float(oldest))
    assert states == {"embedded": 2, "deleted": 1}
    for state, n in states.items():
        assert value(text, "tp_rag_documents", state=state) == n
    assert value(text, "tp_rag_documents", state="unembedded") == 0
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("TRUNCATE rag_documents")
    text, _ = scrape(dsn, instance)
    assert [value(text, "tp_rag_documents", state=s) for s in ("embedded", "deleted", "unembedded")] == [0, 0, 0]


def test_counting_in_the_middle_of_a_transaction_makes_no_writer_wait_for_another(platform, dsn):
    """The triggers append their counts: two writers changing documents (or alerts) of the same states at once
    neither wait for each other nor deadlock (a shared counter row updated in each would make the second wait)."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("INSERT INTO rag_documents (doc_key, kind, text, embedding) SELECT 'n' || g, 'note', 'x', "
                  "CASE WHEN g <= 2 THEN '\\x00'::bytea END FROM generate_series(1, 4) g")
    a, b = psycopg.connect(dsn), psycopg.connect(dsn)
    try:
        b.execute("SET lock_timeout = '2s'")
        # as the summaries' sync does: an embedded document soft-deleted, its replacement inserted
        a.execute("UPDATE rag_documents SET deleted_at = now() WHERE id = 1")
        a.execute("INSERT INTO rag_documents (doc_key, kind, text) VALUES ('n1b', 'note', 'y')")
        # meanwhile the embedder embeds the unembedded ones
        b.execute("UPDATE rag_documents SET embedding = '\\x01' WHERE id IN (3, 4)")
        b.execute("UPDATE rag_documents SET deleted_at = now() WHERE id = 2")
        b.commit()
        a.commit()
    finally:
        a.close()
        b.close()
    text, _ = scrape(dsn, platform[1])
    assert [value(text, "tp_rag_documents", state=s) for s in ("embedded", "unembedded", "deleted")] == [2, 1, 2]


def test_the_ingest_counter_takes_no_forged_figure(platform, dsn):
    """``tp_count_ingest()`` is callable by live_writer (outside writers): it refuses an unknown outcome or a
    negative count, and a source kind is cut to a short plain name."""
    from collections import Counter

    from trading_platform.store.metrics import count_ingest

    with psycopg.connect(dsn, autocommit=True) as c:
        for outcomes in (Counter({("binance", "x" * 300): 1}), Counter({("binance", "inserted"): -5})):
            with pytest.raises(psycopg.errors.InvalidParameterValue):
                count_ingest(c, outcomes)
        count_ingest(c, Counter({("evil{job=\"x\"}://h" + "y" * 80 + ":tail", "inserted"): 2}))
    text, _ = scrape(dsn, platform[1])
    [src] = [dict(k[1])["source"] for k in samples(text) if k[0] == "tp_ingest_rows_total"
             and dict(k[1])["source"] not in ("file",)]
    assert len(src) <= 40 and "{" not in src and '"' not in src and ":" not in src


def test_a_failing_collector_drops_its_own_series_and_is_counted_the_scrape_goes_on(platform, dsn):
    store, instance, res = platform
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("INSERT INTO watchdog_state (name, state, runner, since, checked_at) VALUES ('data_stale', "
                  "'failing', 'sensor', '2025-01-01 00:00+00', now()), ('live_backlog', 'ok', 'sensor', NULL, now()), "
                  "('run_failed', 'failing', 'sensor', '2025-01-01 00:00+00', now() - interval '1 hour')")
    text, _ = scrape(dsn, instance)
    assert value(text, "tp_watchdog_check_failing", check="data_stale") == 1
    assert value(text, "tp_watchdog_check_failing", check="live_backlog") == 0
    # a state the watchdog has not looked at for 10 of its intervals (it stopped): no value rather than a stale one
    assert value(text, "tp_watchdog_check_failing", check="run_failed") is None
    assert value(text, "tp_watchdog_check_since_timestamp_seconds", check="data_stale") == 1735689600.0
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("REVOKE SELECT ON watchdog_state FROM tp_reader")
    text, col = scrape(dsn, instance)
    assert value(text, "tp_watchdog_check_failing", check="data_stale") is None
    assert value(text, "tp_metrics_collect_errors_total", collector="watchdog") == 1
    assert value(text, "tp_ohlcv_last_close_timestamp_seconds", symbol="BTC/USDT", timeframe="5m") is not None


def test_the_cache_serves_one_read_for_its_seconds_and_a_bad_setting_is_named(platform, dsn, monkeypatch):
    from trading_platform.errors import InvalidInput
    from trading_platform.faces.metrics import cache_s

    store, instance, res = platform
    pool = ReadPool(dsn)
    col = PlatformCollector(pool, instance=instance, cache=60)
    col._champions, col.start = [], (lambda: None)
    first = render(col).decode()
    store.ingest_frame("BTC/USDT", "5m", candles("2025-01-01 00:50", 2), source="file")
    assert render(col).decode() == first  # within the cache's seconds: the same read
    col.cache = 0
    assert value(render(col).decode(), "tp_ingest_rows_total", source="file", outcome="inserted") == 12
    pool.close()
    monkeypatch.setenv("TP_METRICS_CACHE_S", "soon")
    with pytest.raises(InvalidInput) as e:
        cache_s()
    assert e.value.field == "TP_METRICS_CACHE_S"


def test_the_registry_thread_exports_each_champion_and_since_when(platform, dsn, empty_registry, tmp_path):  # noqa: F811
    """Read by the background refresh from MLflow's aliases and the champion history."""
    from trading_platform.models.registry import promote

    store, instance, res = platform
    client = empty_registry.client()
    name = "metrics_probe"
    signed_versions(client, name, 2, tmp_path)  # registered by hand, signed: promote accepts them
    promote(client, name, "2", conn=store.conn)
    pool = ReadPool(dsn)
    col = PlatformCollector(pool, instance=instance, cache=0)
    os.environ["MLFLOW_TRACKING_URI"] = empty_registry.tracking_uri
    try:
        col.refresh_registry()
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
    col.start = lambda: None
    text = render(col).decode()
    pool.close()
    since = store.conn.execute("SELECT valid_from FROM model_champions WHERE model_name = %s AND valid_to IS NULL",
                               (name,)).fetchone()[0]
    assert value(text, "tp_model_champion_version", model=name) == 2
    assert value(text, "tp_model_champion_since_timestamp_seconds", model=name) == since.timestamp()


# ---- a real Prometheus scraping tp serve -----------------------------------------------------------------------
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "metrics-read-token-7q"


def _wait(fn, timeout, what):
    import time

    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


def _get(url, token=None):
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return None, ""


def _expressions() -> list[tuple[str, str]]:
    """(where, expr) of every rule in docker/prometheus/rules.yml and every Grafana panel target."""
    from test_monitoring_config import _dashboard_exprs, _rules

    return [(r.get("record") or r.get("alert"), r["expr"]) for r in _rules()] + \
        [(f"panel {title}", expr) for title, expr in _dashboard_exprs()]


def test_a_real_prometheus_scrapes_tp_serve_and_every_rule_and_panel_expression_runs(platform, dsn, tp_env,
                                                                                      tmp_path):
    """Debian's Prometheus with docker/prometheus/prometheus.yml, only the target (and the paths of its token and
    rule files) changed: ``up`` is 1, every rule and every dashboard expression runs through the query API, and
    the counters of a restarted tp serve carry on (they live in the store)."""
    import urllib.parse

    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus is missing: apt-get install prometheus (the CI script installs it)"
    tp(tp_env, "live", "feed", "--symbols", "BTC/USDT,ETH/USDT", "--rate", "50", "--count", "4")
    env = {**tp_env, "TP_API_TOKEN": TOKEN, "TP_METRICS_CACHE_S": "0", "PYTHONPATH": os.pathsep.join(sys.path)}
    port = _port()
    procs = []

    def start_serve():
        log = open(tmp_path / f"serve-{len(procs)}.log", "w")
        p = subprocess.Popen([sys.executable, "-m", "trading_platform.cli", "serve", "--port", str(port)], env=env,
                             stdout=log, stderr=subprocess.STDOUT)
        procs.append(p)
        _wait(lambda: _get(f"http://127.0.0.1:{port}/health")[0] == 200, 60, "tp serve did not come up")
        return p

    try:
        serve = start_serve()
        status, text = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 401  # behind the read token, like the API
        status, text = _get(f"http://127.0.0.1:{port}/metrics", TOKEN)
        assert status == 200 and "tp_live_backlog_events" in text
        assert TOKEN not in text and "://" not in text and "password" not in text.lower()

        (tmp_path / "api_token").write_text(TOKEN + "\n")
        shutil.copy(os.path.join(REPO, "docker/prometheus/rules.yml"), tmp_path / "rules.yml")
        with open(os.path.join(REPO, "docker/prometheus/prometheus.yml")) as f:
            config = f.read()
        assert '"api:8000"' in config
        config = (config.replace('"api:8000"', f'"127.0.0.1:{port}"')
                  .replace("/etc/prometheus/api_token", str(tmp_path / "api_token"))
                  .replace("/etc/prometheus/rules.yml", str(tmp_path / "rules.yml")))
        (tmp_path / "prometheus.yml").write_text(config)
        check = subprocess.run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        pport = _port()
        plog = open(tmp_path / "prometheus.log", "w")
        procs.append(subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                                       f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                       f"--web.listen-address=127.0.0.1:{pport}"], stdout=plog, stderr=plog))
        api = f"http://127.0.0.1:{pport}/api/v1/query?query="

        def query(expr):
            status, body = _get(api + urllib.parse.quote(expr))
            return status, (json.loads(body) if body.startswith("{") else {"status": "error", "error": body})

        def up():
            status, body = query('up{job="trading_platform"}')
            result = body.get("data", {}).get("result", []) if status == 200 else []
            return result and result[0]["value"][1] == "1"

        _wait(up, 60, "Prometheus never scraped tp serve (up != 1):\n" + (tmp_path / "prometheus.log").read_text())
        backlog = _wait(lambda: query('tp_live_backlog_events{consumer="predictions"}')[1]["data"]["result"], 30,
                        "no backlog series in Prometheus")
        assert backlog[0]["value"][1] == "4"
        exprs = _expressions()
        assert len(exprs) >= 10
        for where, expr in exprs:
            status, body = query(expr.replace("$__rate_interval", "1m").replace("$__interval", "1m"))
            assert status == 200 and body["status"] == "success", (where, expr, body)

        # a restarted tp serve: the counters read from the store carry on
        before = samples(_get(f"http://127.0.0.1:{port}/metrics", TOKEN)[1])
        serve.terminate()
        serve.wait(timeout=20)
        start_serve()
        after = samples(_get(f"http://127.0.0.1:{port}/metrics", TOKEN)[1])
        kept = [k for k in before if k[0].startswith(("tp_ingest_rows", "tp_live_events", "tp_live_latency",
                                                      "tp_alerts", "tp_alert_deliveries_total"))]
        assert kept
        for k in kept:
            assert after.get(k, -1) >= before[k], k
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_the_docs_list_every_family_with_its_type_and_labels():
    with open(os.path.join(REPO, "docs/metrics.md")) as f:
        rows = {line.split("|")[1].strip().strip("`"): [c.strip() for c in line.split("|")[2:4]]
                for line in f if line.startswith("| `tp_") and line.count("|") == 5}
    for name, (kind, labels, _) in CATALOGUE.items():
        assert rows.get(name) == [kind, ", ".join(labels) or "—"], name
    assert set(rows) == set(CATALOGUE)
