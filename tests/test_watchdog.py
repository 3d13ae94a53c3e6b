"""The watchdog (trading_platform/watchdog/): edge-triggered messages through the real delivery worker to a local
receiver, over a real PostgreSQL and a real Dagster instance, with the clock injected to cross cooldowns and a
market close."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone

import pytest

from tests.test_alerts_delivery import Receiver, add_destination, wait_until, worker
from trading_platform.core.symbols import SymbolInfo
from trading_platform.errors import InvalidInput
from trading_platform.watchdog import checks, engine
from trading_platform.watchdog.service import Service, spool_path

T0 = datetime(2025, 3, 3, 12, 0, tzinfo=timezone.utc)  # a Monday
M = timedelta(minutes=1)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def candle(store, symbol, ts, tf="1m", close=100.0):
    store.conn.execute(
        "INSERT INTO ohlcv (symbol, timeframe, ts, open, high, low, close, volume) VALUES (%s, %s, %s, %s, %s, %s, "
        "%s, 1) ON CONFLICT DO NOTHING", (symbol, tf, ts, close, close, close, close))


def watched(store, receiver, monkeypatch, name="ops", watchdog=True) -> int:
    monkeypatch.setenv("TP_TEST_HOOK", receiver.url("/hook"))
    return add_destination(store.conn, name, url_env="TP_TEST_HOOK", watchdog=watchdog)


def passes(store, names, now, t=None, **look):
    t = t or checks.thresholds(environ={})
    return engine.run_pass(store.conn, names, checks.Look(store.conn, now, t, **look), "sensor")[1]


def bodies(receiver):
    return [r["json"] for r in receiver.requests]


def test_a_stopped_feed_says_data_stale_once_reminds_after_the_cooldown_and_resolves_once(dsn, store, receiver,
                                                                                            monkeypatch):
    store.add_symbol(SymbolInfo.create("BTC/USDT", timeframes=["1m"], live=True))
    for i in range(10):
        candle(store, "BTC/USDT", T0 + i * M)
    last = T0 + 9 * M  # closes at 12:10; 12:11 expected at 12:11 close ... three candles past it: 12:14
    watched(store, receiver, monkeypatch)
    add_destination(store.conn, "quiet", url_env="TP_TEST_HOOK")  # watchdog off: gets nothing
    made = []
    for s in range(0, 16 * 60, 30):  # 12:10 .. 12:26 every 30 s: stale from 12:14
        made += passes(store, ["data_stale"], last + M + timedelta(seconds=s))
    assert [m.type for m in made] == ["watchdog"]
    first = made[0].payload
    assert first["check"] == "data_stale" and first["subjects"] == ["BTC/USDT 1m"]
    assert first["since"] == (last + 5 * M).isoformat()  # the close of the 4th slot after the newest candle
    # the 15-minute cooldown: a reminder at since + 15 min, not before
    made = passes(store, ["data_stale"], last + 5 * M + timedelta(minutes=14, seconds=59))
    assert made == []
    made = passes(store, ["data_stale"], last + 5 * M + timedelta(minutes=15))
    assert [(m.type, m.payload["reminder"]) for m in made] == [("watchdog", 1)]
    # the feed resumes: resolved after two passes in a row, once
    now = last + 5 * M + timedelta(minutes=16)
    for i in range(10, 30):
        candle(store, "BTC/USDT", T0 + i * M)
    assert passes(store, ["data_stale"], now) == []
    made = passes(store, ["data_stale"], now + timedelta(seconds=30))
    assert [m.type for m in made] == ["watchdog_resolved"]
    assert passes(store, ["data_stale"], now + timedelta(seconds=60)) == []
    with worker(dsn):
        wait_until(lambda: len(receiver.requests) >= 3)
        import time

        time.sleep(0.5)
    got = bodies(receiver)
    assert sorted((b["type"], b["reminder"]) for b in got) == [("watchdog", 0), ("watchdog", 1), ("watchdog_resolved", 0)]
    assert len({r["headers"]["webhook-id"] for r in receiver.requests}) == 3
    st = engine.report_states(store.conn, ["data_stale"])[0]
    assert st["state"] == "ok" and st["last_delivery"]["type"] == "watchdog_resolved"


def test_a_stock_series_over_a_weekend_says_nothing_until_monday_open(store, receiver, monkeypatch):
    store.add_symbol(SymbolInfo.create("AAPL", category="stock", exchange="NASDAQ", timeframes=["5m"], live=True))
    friday = datetime(2025, 3, 7, 14, 30, tzinfo=timezone.utc)  # 09:30 New York
    ts = friday
    while ts < datetime(2025, 3, 7, 21, 0, tzinfo=timezone.utc):  # to the 16:00 close
        candle(store, "AAPL", ts, tf="5m")
        ts += timedelta(minutes=5)
    watched(store, receiver, monkeypatch)
    now, made = datetime(2025, 3, 7, 20, 55, tzinfo=timezone.utc), []
    monday_open = datetime(2025, 3, 10, 13, 30, tzinfo=timezone.utc)  # 09:30 New York (daylight saving time)
    while now < monday_open + timedelta(minutes=15):
        made += passes(store, ["data_stale"], now)
        now += timedelta(minutes=10)
    assert made == []
    # three 5-minute candles past the first expected close on Monday: stale, and said
    made = passes(store, ["data_stale"], monday_open + timedelta(minutes=20))
    assert [m.type for m in made] == ["watchdog"]


def test_a_failed_run_with_a_retry_pending_says_nothing_with_retries_spent_one_message(store, receiver, monkeypatch):
    from dagster import DagsterInstance, job, op

    fail = {"on": True}

    @op
    def flaky():
        if fail["on"]:
            raise RuntimeError("the source answered 500")

    @job
    def nightly():
        flaky()

    watched(store, receiver, monkeypatch)
    with DagsterInstance.ephemeral(settings={"run_retries": {"enabled": True}}) as instance:
        r = nightly.execute_in_process(instance=instance, raise_on_error=False, tags={"dagster/max_retries": "2"})
        assert instance.get_run_by_id(r.run_id).tags.get("dagster/will_retry") == "true"
        now = engine.now_utc() + timedelta(seconds=61)
        assert passes(store, ["run_failed"], now, instance=instance) == []
        r = nightly.execute_in_process(instance=instance, raise_on_error=False, tags={"dagster/max_retries": "0"})
        assert instance.get_run_by_id(r.run_id).tags.get("dagster/will_retry") == "false"
        made = passes(store, ["run_failed"], now + timedelta(seconds=1), instance=instance)
        assert [m.type for m in made] == ["watchdog"] and made[0].payload["subjects"] == ["nightly"]
        assert passes(store, ["run_failed"], now + timedelta(seconds=30), instance=instance) == []
        fail["on"] = False  # a later run of the job succeeds: resolved after two passes
        nightly.execute_in_process(instance=instance)
        assert passes(store, ["run_failed"], now + timedelta(seconds=60), instance=instance) == []
        made = passes(store, ["run_failed"], now + timedelta(seconds=90), instance=instance)
        assert [m.type for m in made] == ["watchdog_resolved"]


def test_mlflow_on_a_dead_port_is_said_after_three_looks_not_before(store, receiver, monkeypatch):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    watched(store, receiver, monkeypatch)
    t = checks.thresholds(environ={}, probe_timeout_s=1)
    dead = f"http://127.0.0.1:{port}"
    seen = []
    for i in range(3):
        seen.append(passes(store, ["mlflow_unreachable"], T0 + i * timedelta(seconds=30), t, tracking=dead))
    assert [len(x) for x in seen] == [0, 0, 1]
    assert seen[2][0].payload["since"] == (T0 + timedelta(seconds=60)).isoformat()
    st = engine.report_states(store.conn, ["mlflow_unreachable"])[0]
    assert st["state"] == "failing" and st["streak"] == 3
    rows = store.conn.execute("SELECT count(*) FROM alert_deliveries WHERE type = 'watchdog'").fetchone()[0]
    assert rows == 1  # the watchdog destination only


def _cluster(tmp_path):
    from trading_platform.store.db import connect
    from trading_platform.store.embedded import ensure_embedded

    dsn = ensure_embedded(tmp_path / "pg")
    connect(dsn).close()  # migrated
    return dsn


def test_the_database_down_is_spooled_sent_and_recorded_once_when_it_returns(tmp_path, receiver, monkeypatch, caplog):
    """A cluster of its own (stopped and started here): the service sends db_unreachable from its spool to the
    destinations it last read, and records it once in the outbox when the database returns."""
    import psycopg

    from trading_platform.store.embedded import ensure_embedded, stop_embedded

    secret_url = receiver.url("/webhook/s3cr3t-path-token")
    monkeypatch.setenv("TP_TEST_HOOK", secret_url)
    dsn = _cluster(tmp_path)
    try:
        with psycopg.connect(dsn, autocommit=True) as c:
            add_destination(c, "ops", url_env="TP_TEST_HOOK", watchdog=True)
        clock = {"now": T0}
        t = checks.thresholds(environ={}, probe_timeout_s=1, disabled="daemon_down,delivery_worker_down")
        svc = Service(dsn, home=tmp_path / "home", t=t, clock=lambda: clock["now"])
        caplog.set_level(logging.DEBUG)
        assert svc.tick() == []  # reads the destinations while the database answers
        stop_embedded(tmp_path / "pg")
        made = []
        for i in range(3):
            clock["now"] += timedelta(seconds=30)
            made.append(svc.tick())
        assert [len(x) for x in made] == [0, 0, 1]
        assert len(receiver.requests) == 1 and receiver.requests[0]["json"]["check"] == "db_unreachable"
        spool = json.loads(spool_path(tmp_path / "home").read_text())
        assert [e["status"] for e in spool["entries"]] == ["sent"]
        # a restarted service during the outage goes on from its spool: no second message
        svc.close()
        svc = Service(dsn, home=tmp_path / "home", t=t, clock=lambda: clock["now"])
        clock["now"] += timedelta(seconds=30)
        assert svc.tick() == []
        ensure_embedded(tmp_path / "pg")
        clock["now"] += timedelta(seconds=30)
        svc.tick()  # recorded once; one pass passed
        clock["now"] += timedelta(seconds=30)
        resolved = svc.tick()
        assert [m.type for m in resolved] == ["watchdog_resolved"]
        assert json.loads(spool_path(tmp_path / "home").read_text())["entries"] == []
        with psycopg.connect(dsn, autocommit=True) as c:
            rows = c.execute("SELECT key, type, status FROM alert_deliveries ORDER BY id").fetchall()
        assert [r[1:] for r in rows] == [("watchdog", "delivered"), ("watchdog_resolved", "pending")]
        assert rows[0][0] == receiver.requests[0]["headers"]["webhook-id"]
        with worker(dsn):
            wait_until(lambda: len(receiver.requests) >= 2)
        assert sorted(b["type"] for b in bodies(receiver)) == ["watchdog", "watchdog_resolved"]
        svc.close()
        # no secret anywhere: logs, messages, the spool, the states
        text = caplog.text + json.dumps(bodies(receiver)) + spool_path(tmp_path / "home").read_text()
        assert "s3cr3t-path-token" not in text
    finally:
        stop_embedded(tmp_path / "pg")


def test_the_delivery_worker_down_goes_out_directly_from_the_service(dsn, store, receiver, monkeypatch, tmp_path):
    watched(store, receiver, monkeypatch)
    clock = {"now": engine.now_utc()}
    t = checks.thresholds(environ={}, disabled="daemon_down")
    svc = Service(dsn, home=tmp_path, t=t, clock=lambda: clock["now"])
    with worker(dsn):  # seen: its view recorded every 10 s
        wait_until(lambda: store.conn.execute("SELECT worker_seen_at FROM alert_destinations").fetchone()[0])
        assert svc.tick() == []
    clock["now"] += timedelta(seconds=61)  # no worker for a minute
    made = svc.tick()
    assert [m.type for m in made] == ["watchdog"] and made[0].check == "delivery_worker_down"
    assert len(receiver.requests) == 1  # sent by the service itself, not through the (dead) worker
    row = store.conn.execute("SELECT status FROM alert_deliveries WHERE type = 'watchdog'").fetchone()
    assert row == ("delivered",)
    with worker(dsn):
        wait_until(lambda: store.conn.execute(
            "SELECT worker_seen_at > %s FROM alert_destinations", (clock["now"] - timedelta(seconds=61),)).fetchone()[0])
        clock["now"] = engine.now_utc()
        svc.tick()
        clock["now"] += timedelta(seconds=1)
        assert [m.type for m in svc.tick()] == ["watchdog_resolved"]
        wait_until(lambda: len(receiver.requests) >= 2)
    svc.close()


def test_collector_down_from_its_status_rows(store, receiver, monkeypatch):
    store.add_symbol(SymbolInfo.create("BTC/USDT", exchange="binance", timeframes=["1m"], live=True))
    store.conn.execute(
        "INSERT INTO collector_status (exchange, kind, name, state, connected, last_frame_at, updated_at) VALUES "
        "('binance', 'connection', 'ws-1', 'reconnecting', false, %s, %s)", (T0, T0 + timedelta(seconds=50)))
    assert passes(store, ["collector_down"], T0 + timedelta(seconds=55)) == []
    made = passes(store, ["collector_down"], T0 + timedelta(seconds=61))
    assert [m.type for m in made] == ["watchdog"] and made[0].payload["since"] == (T0 + M).isoformat()


def test_bad_input_exits_2_naming_the_field(tp_env, monkeypatch, capsys):
    from trading_platform.cli import main

    for k, v in tp_env.items():
        monkeypatch.setenv(k, v)
    assert main(["watchdog", "status", "--check", "nope", "--json"]) == 2
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["field"] == "check"
    monkeypatch.setenv("TP_WATCHDOG_REMIND_S", "-5")
    assert main(["watchdog", "run", "--once", "--json"]) == 2
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["field"] == "TP_WATCHDOG_REMIND_S"
    monkeypatch.delenv("TP_WATCHDOG_REMIND_S")
    assert main(["alerts", "destination", "update", "nowhere", "--watchdog", "on", "--json"]) == 2
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["field"] == "name"
    assert main(["watchdog", "status", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["name"] for r in rows] == list(checks.CHECK_NAMES) and {r["state"] for r in rows} == {"unknown"}
    with pytest.raises(InvalidInput):
        checks.thresholds(environ={"TP_WATCHDOG_DISABLE": "data_stale,nope"})


def test_the_sensor_looks_saves_and_shows_the_state_as_an_asset_check(dsn, store, instance, receiver, monkeypatch):
    from dagster import AssetCheckKey, AssetKey, build_sensor_context

    from trading_platform.resources import MarketDB
    from trading_platform.sensors.watchdog import watchdog_sensor

    store.add_symbol(SymbolInfo.create("BTC/USDT", timeframes=["1m"], live=True))
    candle(store, "BTC/USDT", engine.now_utc() - timedelta(hours=1))  # an hour old: stale
    watched(store, receiver, monkeypatch)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///" + str(dsn and "/nonexistent/mlflow.db"))
    ctx = build_sensor_context(instance=instance, resources={"market_db": MarketDB(database_url=dsn)})
    out = watchdog_sensor(ctx)
    assert "failing data_stale" in str(out.skip_message if hasattr(out, "skip_message") else out)
    states = {s["name"]: s["state"] for s in engine.report_states(store.conn)}
    assert states["data_stale"] == "failing" and states["live_backlog"] == "ok"
    assert states["daemon_down"] == "unknown"  # the service's check: not the sensor's
    ev = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [AssetCheckKey(AssetKey(["market", "ohlcv"]), "watchdog_data_stale")])
    got = list(ev.values())[0]
    assert got is not None and got.evaluation.passed is False


def test_live_backlog_and_a_batch_at_its_third_attempt(store):
    now = engine.now_utc()
    for i in range(3):
        eid = store.conn.execute(
            "INSERT INTO market_events (symbol, timeframe, ts, change, source, created_at) VALUES ('BTC/USDT', '1m', "
            "%s, 'inserted', 'test', clock_timestamp() - interval '200 seconds') RETURNING id", (T0 + i * M,)).fetchone()[0]
        store.conn.execute("INSERT INTO market_event_queue (consumer, event_id) VALUES ('predictions', %s) "
                           "ON CONFLICT DO NOTHING", (eid,))
    made = passes(store, ["live_backlog"], now)
    assert [m.type for m in made] == ["watchdog"] and "3 event(s) waiting" in made[0].payload["detail"]
    # under the age threshold and the count: passing; over the count: failing
    look = checks.Look(store.conn, now, checks.thresholds(environ={}, backlog_age_s=600))
    assert checks.live_backlog(look).failing is False
    look = checks.Look(store.conn, now, checks.thresholds(environ={}, backlog_age_s=600, backlog_events=2))
    assert checks.live_backlog(look).failing is True
    b = store.conn.execute("INSERT INTO live_batches (consumer, events, pins, versions, attempt) VALUES "
                           "('predictions', 3, '{}', '[]', 2) RETURNING id").fetchone()[0]
    assert passes(store, ["live_batch_retrying"], now) == []  # the second attempt: not yet
    store.conn.execute("UPDATE live_batches SET attempt = 3 WHERE id = %s", (b,))
    made = passes(store, ["live_batch_retrying"], now + timedelta(seconds=1))
    assert [m.type for m in made] == ["watchdog"] and made[0].payload["subjects"] == [f"batch {b}"]
    store.conn.execute("UPDATE live_batches SET status = 'done' WHERE id = %s", (b,))
    assert passes(store, ["live_batch_retrying"], now + M) == []
    assert [m.type for m in passes(store, ["live_batch_retrying"], now + 2 * M)] == ["watchdog_resolved"]


def test_dead_deliveries_are_said_and_resolve_once_retried(store, receiver, monkeypatch):
    from trading_platform.alerts import delivery

    dest = watched(store, receiver, monkeypatch, name="n8n", watchdog=False)
    watched(store, receiver, monkeypatch, name="ops")
    store.conn.execute("INSERT INTO alert_deliveries (destination_id, key, type, payload, status, last_error, "
                       "last_error_at) VALUES (%s, 'alert:1:alert', 'alert', '{}', 'dead', 'HTTP 410', now())", (dest,))
    now = engine.now_utc()
    made = passes(store, ["deliveries_dead"], now)
    assert [m.type for m in made] == ["watchdog"] and made[0].payload["subjects"] == ["n8n"]
    assert delivery.retry(store.conn) == 1
    assert passes(store, ["deliveries_dead"], now + M) == []
    assert [m.type for m in passes(store, ["deliveries_dead"], now + 2 * M)] == ["watchdog_resolved"]


def test_daemon_down_after_its_threshold_from_the_newest_heartbeat(store, instance, receiver, monkeypatch, tmp_path,
                                                                   dsn):
    from dagster._daemon.types import DaemonHeartbeat

    watched(store, receiver, monkeypatch)
    beat = T0.timestamp()
    instance.add_daemon_heartbeat(DaemonHeartbeat(beat, "SENSOR", "d1", None))
    clock = {"now": T0 + timedelta(seconds=299)}
    t = checks.thresholds(environ={}, disabled="delivery_worker_down")
    svc = Service(dsn, home=tmp_path, t=t, instance=instance, clock=lambda: clock["now"])
    assert svc.tick() == []
    clock["now"] = T0 + timedelta(seconds=301)
    made = svc.tick()
    assert [m.type for m in made] == ["watchdog"] and made[0].payload["since"] == (T0 + timedelta(seconds=300)).isoformat()
    # queued in the outbox (the worker is up), not sent by the service
    assert receiver.requests == []
    assert store.conn.execute("SELECT status FROM alert_deliveries").fetchall() == [("pending",)]
    instance.add_daemon_heartbeat(DaemonHeartbeat(clock["now"].timestamp(), "SENSOR", "d1", None))
    svc.tick()
    clock["now"] += timedelta(seconds=5)
    assert [m.type for m in svc.tick()] == ["watchdog_resolved"]
    svc.close()


def test_a_worker_unseen_while_the_database_was_away_gets_its_threshold_once_the_service_is_back(
        dsn, store, receiver, monkeypatch, tmp_path):
    watched(store, receiver, monkeypatch)
    # the worker last recorded its view two minutes ago (the database was away meanwhile)
    store.conn.execute("UPDATE alert_destinations SET worker_seen_at = now() - interval '120 seconds'")
    clock = {"now": engine.now_utc()}
    t = checks.thresholds(environ={}, disabled="daemon_down")
    svc = Service(dsn, home=tmp_path, t=t, clock=lambda: clock["now"])
    assert svc.tick() == []  # (re)connected now: the worker has a minute to show up
    clock["now"] += timedelta(seconds=59)
    assert svc.tick() == []
    clock["now"] += timedelta(seconds=2)
    assert [m.check for m in svc.tick()] == ["delivery_worker_down"]
    svc.close()


def test_an_mlflow_password_never_reaches_a_message_and_a_server_behind_auth_is_reachable(store, receiver,
                                                                                          monkeypatch):
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Auth(BaseHTTPRequestHandler):
        def do_GET(self):
            ok = self.headers.get("Authorization") == "Basic " + __import__("base64").b64encode(b"alice:s3cretpw").decode()
            self.send_response(200 if ok and self.path == "/health" else 401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Auth)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        t = checks.thresholds(environ={}, probe_timeout_s=1)
        up = f"http://alice:s3cretpw@127.0.0.1:{srv.server_address[1]}"
        look = checks.Look(store.conn, T0, t, tracking=up)
        assert checks.mlflow_unreachable(look).failing is False  # the credentials go as basic auth
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
        look = checks.Look(store.conn, T0, t, tracking=f"http://127.0.0.1:{srv.server_address[1]}")
        assert checks.mlflow_unreachable(look).failing is False  # 401: it answers
    finally:
        srv.shutdown()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    watched(store, receiver, monkeypatch)
    made = []
    for i in range(3):
        made += passes(store, ["mlflow_unreachable"], T0 + i * M, t,
                       tracking=f"http://alice:s3cretpw@127.0.0.1:{port}")
    assert len(made) == 1 and f"127.0.0.1:{port}" in made[0].payload["detail"]
    stored = json.dumps(engine.report_states(store.conn), default=str)
    assert "s3cretpw" not in json.dumps(made[0].payload) + stored


def test_subjects_that_come_and_go_are_announced_once_not_at_every_flap():
    t = checks.thresholds(environ={})
    st = engine.State.new("stream_stale")
    made = engine.step(st, checks.Observation(True, T0, ["A"], "a"), T0, t)
    assert [m.payload["subjects"] for m in made] == [["A"]]
    got = []
    for i in range(1, 28):  # 13.5 minutes of B flapping every 30 s
        subjects = ["A", "B"] if i % 2 else ["A"]
        got += engine.step(st, checks.Observation(True, T0, subjects, "x"), T0 + i * timedelta(seconds=30), t)
    # B is said once, when a minute has passed since the last message; no reminder before 15 min
    assert [(m.payload["update"], m.payload["new_subjects"]) for m in got] == [(True, ["B"])]
    got = engine.step(st, checks.Observation(True, T0, ["A"], "x"), T0 + timedelta(minutes=15), t)
    assert [m.payload["reminder"] for m in got] == [2]  # the reminder (the update was message 1)


def test_a_reconnect_while_the_worker_is_down_says_no_false_resolved(dsn, store, receiver, monkeypatch, tmp_path):
    watched(store, receiver, monkeypatch)
    store.conn.execute("UPDATE alert_destinations SET worker_seen_at = now() - interval '300 seconds'")
    clock = {"now": engine.now_utc() + timedelta(seconds=61)}
    t = checks.thresholds(environ={}, disabled="daemon_down")
    svc = Service(dsn, home=tmp_path, t=t, clock=lambda: clock["now"])
    svc.tick()  # connected now: it cannot tell yet
    svc.started = svc.connected_at = clock["now"] - timedelta(seconds=120)  # as if connected two minutes ago
    clock["now"] += timedelta(seconds=1)
    svc.tick()
    assert svc.states["delivery_worker_down"].state == "failing"
    svc._close()  # the service loses its connection (a database blip) and reconnects at its next pass
    for _ in range(4):
        clock["now"] += timedelta(seconds=5)
        assert svc.tick() == []  # cannot tell for a minute after the reconnect: never "resolved"
    assert svc.states["delivery_worker_down"].state == "failing"
    svc.close()


def test_the_daemon_beating_but_the_watchdog_sensor_silent_is_said(dsn, store, instance, receiver, monkeypatch,
                                                                   tmp_path):
    from dagster._daemon.types import DaemonHeartbeat

    watched(store, receiver, monkeypatch)
    now = engine.now_utc()
    instance.add_daemon_heartbeat(DaemonHeartbeat(now.timestamp(), "SENSOR", "d1", None))
    store.conn.execute("INSERT INTO watchdog_state (name, runner, state, checked_at) VALUES "
                       "('data_stale', 'sensor', 'ok', %s)", (now - timedelta(minutes=10),))
    t = checks.thresholds(environ={}, disabled="delivery_worker_down")
    svc = Service(dsn, home=tmp_path, t=t, instance=instance, clock=lambda: now)
    svc.started = now - timedelta(minutes=10)
    made = svc.tick()
    assert [(m.check, m.payload["subjects"]) for m in made] == [("daemon_down", ["watchdog_sensor"])]
    svc.close()


def test_a_bad_interval_or_an_infinite_threshold_names_its_field(tp_env, monkeypatch, capsys):
    from trading_platform.cli import main

    for k, v in tp_env.items():
        monkeypatch.setenv(k, v)
    assert main(["watchdog", "run", "--once", "--interval", "0.5", "--json"]) == 2
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["field"] == "interval"
    for var, value in (("TP_WATCHDOG_RESOLVE_PASSES", "inf"), ("TP_WATCHDOG_INTERVAL_S", "nan")):
        with pytest.raises(InvalidInput) as e:
            checks.thresholds(environ={var: value})
        assert e.value.field == var


def test_a_threshold_past_its_maximum_is_refused_not_an_overflow_later(tp_env, monkeypatch, capsys):
    from trading_platform.cli import main

    for var, value in (("TP_WATCHDOG_INTERVAL_S", "1e300"), ("TP_WATCHDOG_DAEMON_DOWN_S", "1e15"),
                       ("TP_WATCHDOG_WORKER_DOWN_S", "1e15"), ("TP_WATCHDOG_RESOLVE_PASSES", "1e9"),
                       ("TP_WATCHDOG_PROBE_TIMEOUT_S", "1e7"), ("TP_WATCHDOG_INTERVAL_S", "0_30")):
        with pytest.raises(InvalidInput) as e:
            checks.thresholds(environ={var: value})
        assert e.value.field == var and "\n" not in e.value.message
    t = checks.thresholds(environ={"TP_WATCHDOG_DAEMON_DOWN_S": "31536000", "TP_WATCHDOG_RESOLVE_PASSES": "2.0"})
    assert t.daemon_down_s == 365 * 86400 and t.resolve_passes == 2
    for k, v in tp_env.items():
        monkeypatch.setenv(k, v)
    assert main(["watchdog", "run", "--once", "--interval", "1e300", "--json"]) == 2
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["field"] == "interval"


@pytest.mark.parametrize("text", ["[]", '{"entries": 5}', '{"entries": [{"x": 1}]}', "garbage{",
                                  '{"states": {"daemon_down": 5}}', '{"destinations": [7]}'])
def test_a_spool_of_the_wrong_shape_is_set_aside_never_overwritten(tmp_path, caplog, text):
    from trading_platform.watchdog.service import Spool

    path = spool_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with caplog.at_level(logging.WARNING, logger="trading_platform.watchdog.service"):
        svc = Service("postgresql://127.0.0.1:1/none", home=tmp_path, t=checks.thresholds(environ={}))
    assert svc.spool.entries == [] and svc.spool.undirected() == [] and svc.states["daemon_down"].state == "unknown"
    (aside,) = path.parent.glob("spool.json.corrupt-*")
    assert aside.read_text() == text and str(aside) in caplog.text
    svc.spool.save()  # the new spool is written; the old one's messages stay where they were moved
    assert aside.read_text() == text and json.loads(path.read_text())["entries"] == []
    assert Spool(path).entries == [] and len(list(path.parent.glob("spool.json.corrupt-*"))) == 1
