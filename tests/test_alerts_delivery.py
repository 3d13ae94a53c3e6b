"""The alert delivery worker against a real PostgreSQL and real local HTTP receivers (the only fakes): retries
and their keys, signatures, dead letters, Retry-After, crash recovery, timeouts, Telegram's rate limits and
digests, misconfigured destinations, secrets kept out of every output, two workers at once."""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from trading_platform.alerts import adapters, delivery
from trading_platform.alerts.adapters import sign, verify
from trading_platform.errors import InvalidInput, redact_secrets

FAST = {"poll_s": 0.1, "timeout_s": 0.5, "backoff_base_s": 0.05}


# ---- receivers --------------------------------------------------------------------------------------------------
class Receiver:
    """A local HTTP server that records every POST (monotonic and wall time, path, headers, body) and answers with
    ``respond(request, index) -> (status, headers, body)`` (which may sleep: a receiver that hangs)."""

    def __init__(self, respond=None):
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.respond = respond or (lambda req, i: (200, {}, b"ok"))
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                req = {"t": time.monotonic(), "wall": time.time(), "path": self.path,
                       "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
                try:
                    req["json"] = json.loads(body)
                except ValueError:
                    req["json"] = None
                with outer.lock:
                    i = len(outer.requests)
                    outer.requests.append(req)
                status, headers, out = outer.respond(req, i)
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                except OSError:  # the client gave up (a timeout test)
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda *a: None
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def keys(self) -> list[str]:
        return [r["headers"].get("webhook-id") for r in self.requests]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers():
    made = []

    def make(respond=None):
        r = Receiver(respond)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def telegram_server(make, token: str, interval_s: float = 1.0):
    """A Bot API shaped receiver: ``/bot<token>/sendMessage`` only; more than one message per ``interval_s`` in a
    chat is a violation, answered 429 with ``parameters.retry_after`` (as Telegram does)."""
    state = {"last": {}, "violations": 0, "messages": []}
    lock = threading.Lock()

    def respond(req, i):
        if req["path"] != f"/bot{token}/sendMessage":
            return 404, {}, json.dumps({"ok": False, "error_code": 404, "description": "Not Found"}).encode()
        msg = req["json"]
        with lock:
            last = state["last"].get(msg["chat_id"])
            if last is not None and req["t"] - last < interval_s:
                state["violations"] += 1
                return 429, {"Content-Type": "application/json"}, json.dumps(
                    {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 1",
                     "parameters": {"retry_after": 1}}).encode()
            state["last"][msg["chat_id"]] = req["t"]
            state["messages"].append(msg)
            n = len(state["messages"])
        return 200, {"Content-Type": "application/json"}, json.dumps(
            {"ok": True, "result": {"message_id": n}}).encode()

    return make(respond), state


# ---- rows -------------------------------------------------------------------------------------------------------
def add_destination(conn, name: str, kind: str = "webhook", **cols) -> int:
    cols = {"name": name, "kind": kind, **cols}
    names = ", ".join(cols)
    marks = ", ".join(["%s"] * len(cols))
    return conn.execute(f"INSERT INTO alert_destinations ({names}) VALUES ({marks}) RETURNING id",
                        list(cols.values())).fetchone()[0]


def payload(i: int, key: str, **over) -> dict:
    p = {"type": "alert", "key": key, "model": "pump", "model_version": "3", "symbol": f"S{i:03d}/USDT",
         "timeframe": "1h", "ts": "2025-03-01T10:00:00+00:00", "probability": 0.83, "threshold": 0.7,
         "side": "above", "price": 43210.5, "target": "rise_3pct_6", "status": "pending", "outcome": None,
         "hit_rate": 0.62, "hit_rate_n": 40, "schema_version": 1}
    p.update(over)
    return p


def enqueue(conn, dest: int, n: int = 1, *, start: int = 0, due_in_s: float = 0.0, notify: bool = True,
            **over) -> list[str]:
    keys = []
    for i in range(start, start + n):
        key = f"alert:{dest * 1000 + i}:alert"
        conn.execute("INSERT INTO alert_deliveries (destination_id, key, type, payload, next_attempt_at) "
                     "VALUES (%s, %s, 'alert', %s, now() + make_interval(secs => %s))",
                     (dest, key, json.dumps(payload(i, key, **over)), due_in_s))
        keys.append(key)
    if notify:
        conn.execute("NOTIFY tp_alerts")
    return keys


def rows(conn, dest: int | None = None) -> list[dict]:
    cur = conn.execute("SELECT id, key, status, attempts, last_status, last_error, digest_size, delivered_at, "
                       "claimed_at FROM alert_deliveries WHERE %(d)s::int IS NULL OR destination_id = %(d)s "
                       "ORDER BY id", {"d": dest})
    cols = [c.name for c in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def wait_until(pred, timeout: float = 15.0, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(step)
    raise AssertionError(f"not reached within {timeout} s")


def all_status(conn, dest, status):
    return lambda: all(r["status"] == status for r in rows(conn, dest))


@contextmanager
def worker(dsn, **kw):
    """run_worker in a thread until the block ends (its stop Event set); its exception, if any, re-raised."""
    stop = threading.Event()
    out: dict = {}

    def run():
        try:
            out["result"] = delivery.run_worker(dsn, stop=stop, **{**FAST, **kw})
        except BaseException as e:  # re-raised in the test
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield out
    finally:
        stop.set()
        t.join(20)
    assert not t.is_alive(), "the worker did not stop"
    if "error" in out:
        raise out["error"]


def whsec() -> str:
    return "whsec_" + base64.b64encode(b"k" * 24).decode()


@pytest.fixture
def conn(store):
    return store.conn


# ---- the worker -------------------------------------------------------------------------------------------------
def test_500_500_200_is_delivered_once_under_one_key_signed_each_time(dsn, conn, receivers, monkeypatch):
    hook = receivers(lambda req, i: (500, {}, b"boom") if i < 2 else (200, {}, b"ok"))
    monkeypatch.setenv("TP_T_URL", hook.url())
    monkeypatch.setenv("TP_T_SECRET", whsec())
    dest = add_destination(conn, "ops", url_env="TP_T_URL", secret_env="TP_T_SECRET")
    [key] = enqueue(conn, dest)
    with worker(dsn):
        wait_until(all_status(conn, dest, "delivered"))
        time.sleep(0.3)  # nothing more goes out once delivered
    assert len(hook.requests) == 3
    assert hook.keys() == [key] * 3
    for req in hook.requests:
        assert req["headers"]["idempotency-key"] == key
        assert req["headers"]["content-type"] == "application/json"
        assert verify(whsec(), req["headers"], req["body"])
        assert req["json"] == payload(0, key)  # the payload as it is: one flat object
    [row] = rows(conn, dest)
    assert (row["attempts"], row["last_status"], row["digest_size"]) == (3, 200, None)
    assert row["delivered_at"] is not None


def test_400_is_dead_at_once_404_names_n8n_and_retry_revives(dsn, conn, receivers, monkeypatch):
    answer = {"code": 400}
    bad = receivers(lambda req, i: (answer["code"], {}, b'{"message": "field probability is required"}'))
    missing = receivers(lambda req, i: (404, {}, b'{"code":404,"message":"not registered"}'))
    monkeypatch.setenv("TP_T_BAD", bad.url())
    monkeypatch.setenv("TP_T_MISSING", missing.url("/webhook/abc"))
    d_bad = add_destination(conn, "bad", url_env="TP_T_BAD")
    d_missing = add_destination(conn, "missing", url_env="TP_T_MISSING")
    enqueue(conn, d_bad)
    enqueue(conn, d_missing)
    with worker(dsn):
        wait_until(lambda: all_status(conn, d_bad, "dead")() and all_status(conn, d_missing, "dead")())
        [r400], [r404] = rows(conn, d_bad), rows(conn, d_missing)
        assert (r400["attempts"], r400["last_status"]) == (1, 400)
        assert "HTTP 400" in r400["last_error"] and "field probability is required" in r400["last_error"]
        assert r404["attempts"] == 1 and "HTTP 404" in r404["last_error"]
        assert "n8n" in r404["last_error"] and "activate the workflow" in r404["last_error"]
        assert len(bad.requests) == len(missing.requests) == 1
        answer["code"] = 200
        assert delivery.retry(conn, destination="bad") == 1
        wait_until(all_status(conn, d_bad, "delivered"))
    assert rows(conn, d_bad)[0]["attempts"] == 1  # attempts counted from zero again
    assert rows(conn, d_missing)[0]["status"] == "dead"
    with pytest.raises(InvalidInput) as e:
        delivery.retry(conn, destination="nope")
    assert e.value.field == "destination"


def test_retry_after_is_respected(dsn, conn, receivers, monkeypatch):
    hook = receivers(lambda req, i: (429, {"Retry-After": "2"}, b"slow down") if i == 0 else (200, {}, b"ok"))
    monkeypatch.setenv("TP_T_URL", hook.url())
    dest = add_destination(conn, "ops", url_env="TP_T_URL")
    enqueue(conn, dest)
    with worker(dsn):
        wait = wait_until(lambda: conn.execute(
            "SELECT extract(epoch FROM next_attempt_at - now()) FROM alert_deliveries WHERE status = 'pending' "
            "AND attempts = 1").fetchone())
        assert wait[0] > 1.5  # recorded with the row: a worker started meanwhile waits as long
        wait_until(all_status(conn, dest, "delivered"))
    first, second = hook.requests
    assert second["t"] - first["t"] >= 2.0  # the backoff alone would be 0.05 s


def test_a_claim_left_by_a_killed_worker_is_sent_again_under_the_same_key(dsn, conn, receivers, monkeypatch):
    hook = receivers()
    monkeypatch.setenv("TP_T_URL", hook.url())
    dest = add_destination(conn, "ops", url_env="TP_T_URL")
    crashed, fresh = enqueue(conn, dest, 2, notify=False)
    # a worker killed after its POST, before its record: the row stays 'sending' with its claim; another worker's
    # claim made just now (fresh) is not taken from it before 2 x timeout_s
    conn.execute("UPDATE alert_deliveries SET status = 'sending', attempts = 1, claimed_at = now() - interval "
                 "'1 minute' WHERE key = %s", (crashed,))
    conn.execute("UPDATE alert_deliveries SET status = 'sending', attempts = 1, claimed_at = now() WHERE key = %s",
                 (fresh,))
    claimed_fresh = time.time()
    with worker(dsn):
        wait_until(lambda: all_status(conn, dest, "delivered")())
        time.sleep(0.3)
    assert sorted(hook.keys()) == sorted([crashed, fresh])  # each sent once more, under its key
    by_key = {r["headers"]["webhook-id"]: r for r in hook.requests}
    assert by_key[fresh]["wall"] - claimed_fresh >= 2 * FAST["timeout_s"] - 0.05
    assert by_key[crashed]["wall"] < by_key[fresh]["wall"]
    assert [r["attempts"] for r in rows(conn, dest)] == [2, 2]


def test_deliveries_queued_without_a_worker_go_out_when_it_starts_and_notify_wakes_it(dsn, conn, receivers,
                                                                                        monkeypatch):
    hook = receivers()
    monkeypatch.setenv("TP_T_URL", hook.url())
    dest = add_destination(conn, "ops", url_env="TP_T_URL", rate_per_min=6000)
    queued = enqueue(conn, dest, 3)
    time.sleep(0.2)
    assert all(r["status"] == "pending" for r in rows(conn, dest))
    with worker(dsn, poll_s=5.0):
        wait_until(all_status(conn, dest, "delivered"), timeout=3)
        time.sleep(0.5)  # the worker is back in its wait (of up to 5 s)
        t0 = time.monotonic()
        later = enqueue(conn, dest, 1, start=3)  # NOTIFY tp_alerts: no need to wait for the 5 s poll
        wait_until(all_status(conn, dest, "delivered"), timeout=4)
        assert time.monotonic() - t0 < 2.0
    assert sorted(hook.keys()) == sorted(queued + later)
    st = delivery.status(conn)
    assert (st["backlog"], st["dead"], st["delivered_last_hour"]) == (0, 0, 4)
    assert st["latency_last_hour_s"]["p95"] >= st["latency_last_hour_s"]["p50"] >= 0


def test_the_worker_survives_losing_its_database_connections(dsn, conn, receivers, monkeypatch):
    hook = receivers()
    monkeypatch.setenv("TP_T_URL", hook.url())
    dest = add_destination(conn, "ops", url_env="TP_T_URL")
    enqueue(conn, dest)
    with worker(dsn):
        wait_until(all_status(conn, dest, "delivered"))
        killed = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                              "WHERE application_name = %s", (delivery.APPLICATION_NAME,)).fetchone()[0]
        assert killed == 2  # its listening connection and the one answers are recorded on
        enqueue(conn, dest, 1, start=1)
        wait_until(all_status(conn, dest, "delivered"))
    assert len(hook.requests) == 2


def test_a_receiver_that_hangs_times_out_and_is_retried(dsn, conn, receivers, monkeypatch):
    def respond(req, i):
        if i == 0:
            time.sleep(1.5)  # accepts, then says nothing past the worker's timeout (0.5 s)
        return 200, {}, b"ok"

    hook = receivers(respond)
    monkeypatch.setenv("TP_T_URL", hook.url())
    dest = add_destination(conn, "ops", url_env="TP_T_URL")
    [key] = enqueue(conn, dest)
    with worker(dsn):
        wait_until(all_status(conn, dest, "delivered"))
    [row] = rows(conn, dest)
    assert row["attempts"] == 2 and "timed out" in row["last_error"]
    assert hook.keys() == [key, key]
    assert hook.requests[1]["t"] - hook.requests[0]["t"] < 1.5  # retried after the timeout, not the hang


def test_telegram_50_at_once_digests_within_rate_limits(dsn, conn, receivers, monkeypatch):
    token = "123456789:AAH-telegramSecretToken_0123456789abcdef"
    tg, state = telegram_server(receivers, token)
    monkeypatch.setenv("TP_TELEGRAM_API_URL", tg.url(""))
    monkeypatch.setenv("TP_T_TOKEN", token)
    dest = add_destination(conn, "chat", "telegram", token_env="TP_T_TOKEN", chat_id="4242")
    long_model = "pump_" + "x" * 60  # lines of ~150 characters: 50 of them need two messages (27 + 23)
    enqueue(conn, dest, 50, model=long_model)
    with worker(dsn):
        wait_until(all_status(conn, dest, "delivered"), timeout=15)
        enqueue(conn, dest, 3, start=50)  # a few: one message each, still one per second
        wait_until(all_status(conn, dest, "delivered"), timeout=15)
    assert state["violations"] == 0
    texts = [m["text"] for m in state["messages"]]
    assert all(len(t) <= 4096 for t in texts)
    assert all(m["parse_mode"] == "HTML" and m["chat_id"] == "4242" for m in state["messages"])
    for i in range(53):
        assert sum(t.count(f"S{i:03d}/USDT") for t in texts) == 1, i
    assert len(texts) == 2 + 3  # two digests, then one message per alert (3 due: not a digest)
    digests = [r for r in rows(conn, dest) if r["digest_size"]]
    assert len(digests) == 50 and all(r["attempts"] == 1 for r in rows(conn, dest))
    assert "<b>ALERT</b>" in texts[-1] and "p 0.83 ≥ 0.70" in texts[-1] and "hit rate 62% of 40" in texts[-1]


def test_webhook_digest_holds_what_is_due_only(dsn, conn, receivers, monkeypatch):
    hook = receivers()
    monkeypatch.setenv("TP_T_URL", hook.url())
    dest = add_destination(conn, "ops", url_env="TP_T_URL")
    due = enqueue(conn, dest, 15, notify=False)
    later = enqueue(conn, dest, 2, start=15, due_in_s=3600, notify=False)
    with worker(dsn):
        wait_until(lambda: sum(r["status"] == "delivered" for r in rows(conn, dest)) == 15)
        time.sleep(0.3)
    [req] = hook.requests
    body = req["json"]
    ids = [r["id"] for r in rows(conn, dest)]
    assert body["type"] == "digest" and body["schema_version"] == 1
    assert body["key"] == f"digest:{dest}:{ids[0]}-{ids[14]}-15" == req["headers"]["webhook-id"]
    assert [item["key"] for item in body["items"]] == due
    assert body["items"][0] == payload(0, due[0])
    by_key = {r["key"]: r for r in rows(conn, dest)}
    assert all(by_key[k]["digest_size"] == 15 for k in due)
    assert all(by_key[k]["status"] == "pending" and by_key[k]["attempts"] == 0 for k in later)


def test_misconfigured_destination_waits_and_names_the_variable(dsn, conn, receivers, monkeypatch):
    hook = receivers()
    monkeypatch.delenv("TP_T_LATER_URL", raising=False)
    dest = add_destination(conn, "later", url_env="TP_T_LATER_URL")
    add_destination(conn, "off", url_env="TP_T_LATER_URL", enabled=False)
    enqueue(conn, dest, 2)
    with worker(dsn):
        time.sleep(0.6)
        assert [(r["status"], r["attempts"]) for r in rows(conn, dest)] == [("pending", 0)] * 2
        st = {d["name"]: d for d in delivery.destination_status(conn)}
        assert st["later"]["state"] == "misconfigured" and st["later"]["unset"] == "TP_T_LATER_URL"
        assert st["later"]["deliveries"]["pending"] == 2 and st["later"]["oldest_pending_age_s"] >= 0.5
        assert st["off"]["state"] == "disabled"
        with pytest.raises(InvalidInput) as e:
            delivery.send_test(conn, "later")
        assert e.value.field == "url_env" and "TP_T_LATER_URL" in e.value.message
        monkeypatch.setenv("TP_T_LATER_URL", hook.url())
        wait_until(all_status(conn, dest, "delivered"))
    assert {d["name"]: d["state"] for d in delivery.destination_status(conn)}["later"] == "ok"
    with pytest.raises(InvalidInput) as e:
        delivery.send_test(conn, "nope")
    assert e.value.field == "name"


def test_send_test_signs_and_reports(conn, receivers, monkeypatch):
    hook = receivers()
    monkeypatch.setenv("TP_T_URL", hook.url())
    monkeypatch.setenv("TP_T_SECRET", "plain-secret")
    add_destination(conn, "ops", url_env="TP_T_URL", secret_env="TP_T_SECRET")
    out = delivery.send_test(conn, "ops", timeout_s=2)
    assert (out["destination"], out["status"], out["ok"], out["error"]) == ("ops", 200, True, None)
    [req] = hook.requests
    assert req["json"]["type"] == "test" and req["headers"]["webhook-id"] == req["json"]["key"]
    assert verify("plain-secret", req["headers"], req["body"])
    assert not verify("other-secret", req["headers"], req["body"])


def test_no_secret_in_logs_errors_or_reports(dsn, conn, receivers, monkeypatch, caplog):
    token = "987654321:AAsecretTelegramToken_abcdefghijklmnopq"
    path_secret = "n8nPathSecret0a1b2c3d"
    query_secret = "querySecretValue77"
    signing = "whsec_" + base64.b64encode(b"signing-secret-bytes-0123").decode()
    secrets = [token, token.split(":")[1], path_secret, query_secret, signing, signing[6:]]

    def echo(req, i):  # n8n-like: the 404 quotes the path it did not find (the secret)
        return 404, {}, json.dumps({"code": 404, "message": f"webhook POST {req['path']} is not registered"}).encode()

    hook = receivers(echo)
    tg = receivers(lambda req, i: (400, {}, json.dumps(
        {"ok": False, "error_code": 400, "description": f"Bad Request: chat not found {req['path']}"}).encode()))
    monkeypatch.setenv("TP_T_URL", hook.url(f"/webhook/{path_secret}?token={query_secret}"))
    monkeypatch.setenv("TP_T_SECRET", signing)
    monkeypatch.setenv("TP_T_TOKEN", token)
    monkeypatch.setenv("TP_TELEGRAM_API_URL", tg.url(""))
    monkeypatch.setenv("TP_T_DOWN", f"http://127.0.0.1:9/webhook/{path_secret}")  # refused: retried
    d_hook = add_destination(conn, "n8n", url_env="TP_T_URL", secret_env="TP_T_SECRET")
    d_tg = add_destination(conn, "tg", "telegram", token_env="TP_T_TOKEN", chat_id="-100")
    d_down = add_destination(conn, "down", url_env="TP_T_DOWN")
    add_destination(conn, "unset", url_env="TP_T_UNSET", secret_env="TP_T_SECRET")
    for d in (d_hook, d_tg, d_down):
        enqueue(conn, d)
    lines: list[str] = []
    caplog.set_level(logging.DEBUG)
    with worker(dsn, log=lines.append):
        wait_until(lambda: all(r["last_error"] for r in rows(conn)))
        wait_until(lambda: rows(conn, d_hook)[0]["status"] == "dead" and rows(conn, d_tg)[0]["status"] == "dead")
    outputs = [delivery.send_test(conn, name, timeout_s=2) for name in ("n8n", "tg", "down")]
    with pytest.raises(InvalidInput) as e:
        delivery.send_test(conn, "unset")
    report = delivery.destination_status(conn)
    errors = [r["last_error"] for r in rows(conn)]
    assert "n8n" in errors[0] and "HTTP 404" in errors[0] and "chat not found" in errors[1]
    assert "refused" in errors[2]
    assert [o["ok"] for o in outputs] == [False, False, False] and outputs[1]["status"] == 400
    text = "\n".join([*(r.getMessage() for r in caplog.records), *lines, *errors, json.dumps(report, default=str),
                      json.dumps(outputs), str(e.value)])
    assert len(hook.requests) >= 2 and len(tg.requests) >= 2 and lines
    for s in secrets:
        assert s not in text, s
    assert path_secret in hook.requests[0]["path"] and verify(signing, hook.requests[0]["headers"],
                                                               hook.requests[0]["body"])


def test_two_workers_never_send_a_row_twice(dsn, conn, receivers, monkeypatch):
    hooks, dests, keys = [], [], []
    for n in range(3):
        hook = receivers(lambda req, i: (time.sleep(0.02), (200, {}, b"ok"))[1])
        monkeypatch.setenv(f"TP_T_URL{n}", hook.url())
        dest = add_destination(conn, f"ops{n}", url_env=f"TP_T_URL{n}", rate_per_min=60000)
        hooks.append(hook)
        dests.append(dest)
        keys += enqueue(conn, dest, 20, notify=False)
    # a 5 s request timeout: on a loaded machine a 0.5 s one can expire on a request the receiver took in, and the
    # retry of that ambiguous attempt (same key) is not what this test is about
    with worker(dsn, digest_at=1000, timeout_s=5.0), worker(dsn, digest_at=1000, timeout_s=5.0):
        wait_until(all_status(conn, None, "delivered"), timeout=60)
        time.sleep(0.3)
    sent = [k for h in hooks for k in h.keys()]
    assert sorted(sent) == sorted(keys)  # every key once, none twice
    assert all(r["attempts"] == 1 for r in rows(conn))


def test_claim_skips_locked_rows_and_never_hands_out_a_row_twice(dsn, conn):
    import psycopg

    dest = add_destination(conn, "ops", url_env="TP_T_URL")
    enqueue(conn, dest, 5, notify=False)
    first = rows(conn, dest)[0]["id"]
    with psycopg.connect(dsn, autocommit=True) as a, psycopg.connect(dsn, autocommit=True) as b, \
            psycopg.connect(dsn) as holder:
        a.execute("SET lock_timeout = '2s'")
        b.execute("SET lock_timeout = '2s'")
        holder.execute("SELECT 1 FROM alert_deliveries WHERE id = %s FOR UPDATE", (first,))  # a claim in flight
        got_a = [x for u in delivery.claim(a, dest, 3) for x in u]
        got_b = [x for u in delivery.claim(b, dest, 10) for x in u]
        holder.rollback()
    assert [x.id for x in got_a] == [first + 1, first + 2, first + 3]  # the locked row passed over, not waited
    assert [x.id for x in got_b] == [first + 4]  # what a's claim took is 'sending': not handed out again
    assert all(x.attempts == 1 for x in got_a + got_b)
    assert [r["status"] for r in rows(conn, dest)] == ["pending"] + ["sending"] * 4
    [[again]] = delivery.claim(conn, dest, 10, reclaim_after_s=3600)  # released: claimed now, alone
    assert again.id == first
    # a claim that outlived its worker is taken again (attempt 2): the first attempt's record then changes nothing
    [[retaken]] = delivery.claim(conn, dest, 1, reclaim_after_s=0)
    assert (retaken.id, retaken.attempts) == (first, 2)
    assert delivery.mark_delivered(conn, [again], 200) == 0
    assert delivery.mark_failed(conn, [again], 500, "late", retry=True, delay_s=0) == []
    assert delivery.mark_delivered(conn, [retaken], 200) == 1
    assert delivery.mark_delivered(conn, [retaken], 200) == 0  # never marked twice


# ---- pieces -----------------------------------------------------------------------------------------------------
def test_sign_and_verify_follow_standard_webhooks():
    body = b'{"a":1}'
    # the Standard Webhooks reference vector (whsec_ secret: base64 after the prefix)
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                b'{"test": 2432232314}') == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    now = 1_700_000_000
    headers = {"webhook-id": "alert:1:alert", "webhook-timestamp": str(now),
               "webhook-signature": "v1,bogus " + sign("plain", "alert:1:alert", now, body)}
    assert verify("plain", headers, body, now=now)
    assert not verify("plain", headers, body + b" ", now=now)
    assert not verify("plain", headers, body, now=now + 3600)  # replayed an hour later
    assert not verify("other", headers, body, now=now)
    req = adapters.webhook_request(adapters.Target(1, "x", "webhook", url="http://h/x", secret=secret),
                                   "alert:1:alert", {"a": 1}, now=now)
    assert verify(secret, req.headers, req.body, now=now) and req.headers["Idempotency-Key"] == "alert:1:alert"


def test_what_an_answer_means():
    hook = adapters.Target(1, "h", "webhook", url="http://h/webhook/sec")
    tg = adapters.Target(2, "t", "telegram", chat_id="1", token="1:x")
    ok = adapters.classify(hook, 204, {}, b"")
    assert ok.ok
    for code in (408, 425, 429, 500, 502, 503):
        r = adapters.classify(hook, code, {}, b"busy")
        assert not r.ok and r.retry, code
    r = adapters.classify(hook, 503, {"Retry-After": "120"}, b"")
    assert r.retry and r.retry_after_s == 120
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= adapters.retry_after({"Retry-After": date}) <= 31
    r = adapters.classify(tg, 429, {}, b'{"ok":false,"error_code":429,"parameters":{"retry_after":7}}')
    assert r.retry and r.retry_after_s == 7
    assert adapters.classify(tg, 200, {}, b"<html>proxy</html>").retry  # a garbage answer: retried
    assert adapters.classify(tg, 200, {}, b'{"ok":true,"result":{}}').ok
    r = adapters.classify(hook, 422, {}, b"x" * 1000)
    assert not r.retry and r.error.startswith("HTTP 422: ") and len(r.error) <= 310
    assert not adapters.classify(hook, 301, {}, b"").retry
    r = adapters.classify(tg, 403, {}, b'{"ok":false,"error_code":403,"description":"Forbidden: bot was blocked"}')
    assert not r.retry and "bot was blocked" in r.error


def test_no_answer_or_garbage_is_retried():
    import socket

    def serve(sock, reply):
        conn, _ = sock.accept()
        conn.recv(65536)
        if reply:
            conn.sendall(reply)
        conn.close()

    outcomes = []
    for reply in (b"this is not HTTP\r\n\r\n", None):  # garbage, then closed without a word
        sock = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=serve, args=(sock, reply), daemon=True).start()
        target = adapters.Target(1, "h", "webhook", url=f"http://127.0.0.1:{sock.getsockname()[1]}/webhook/s3cret")
        outcomes.append(adapters.send(target, adapters.webhook_request(target, "k", {}), 2.0))
        sock.close()
    free = socket.create_server(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there now: refused
    target = adapters.Target(1, "h", "webhook", url=f"http://127.0.0.1:{port}/webhook/s3cret")
    outcomes.append(adapters.send(target, adapters.webhook_request(target, "k", {}), 2.0))
    assert [(r.ok, r.retry, r.status) for r in outcomes] == [(False, True, None)] * 3
    assert "not HTTP" in outcomes[0].error and "refused" in outcomes[2].error
    assert not any("s3cret" in r.error for r in outcomes)


def test_webhook_credentials_in_the_url_become_basic_auth():
    target = adapters.Target(1, "h", "webhook", url="https://bob:pa%40ss@h.example/in")
    req = adapters.webhook_request(target, "k", {})
    assert req.url == "https://h.example/in"
    assert base64.b64decode(req.headers["Authorization"].split()[1]) == b"bob:pa@ss"


def test_webhook_digests_split_evenly():
    target = adapters.Target(1, "h", "webhook", url="http://h/x")
    items = [delivery.Delivery(i, 1, f"k{i}", "alert", {}, 0, None) for i in range(150)]
    assert [len(u) for u in delivery.units_for(target, items, 8)] == [75, 75]
    assert [len(u) for u in delivery.units_for(target, items, 1)] == [75]
    assert [len(u) for u in delivery.units_for(target, items[:10], 3)] == [1, 1, 1]  # 10 or fewer: one by one


def test_rate_limit_never_lets_more_through_than_its_window():
    lim = delivery.RateLimit([(1, 1.0)])
    assert lim.room(0.0) == 1
    lim.start()
    assert lim.room(0.5) == 0 and lim.wait_s(0.5) is None  # in flight: only its answer frees the place
    lim.end(2.0)  # answered at 2.0: the next may start at 3.0, a second after the answer
    assert lim.room(2.5) == 0 and lim.wait_s(2.5) == pytest.approx(0.5)
    assert lim.room(3.0) == 1
    group = delivery.RateLimit([(1, 1.0), (20, 60.0)])
    for k in range(20):
        assert group.room(k * 1.5) == 1
        group.start()
        group.end(k * 1.5)
    assert group.room(40.0) == 0 and group.wait_s(40.0) == pytest.approx(20.0)
    group.block(100.0)
    assert group.room(70.0) == 0 and group.wait_s(70.0) == pytest.approx(30.0)


def test_telegram_digest_messages_fit():
    lines = [adapters.alert_line(payload(i, f"alert:{i}:alert", model="m" * 300)) for i in range(40)]
    groups = adapters.pack_lines(lines)
    assert sorted(i for g in groups for i in g) == list(range(40)) and len(groups) > 1
    assert all(len(adapters.digest_text([lines[i] for i in g])) <= 4096 for g in groups)
    line = adapters.alert_line(payload(1, "k", symbol="A<B>&C", type="alert_resolved", outcome="success"))
    assert "A&lt;B&gt;&amp;C" in line and "<b>RESOLVED</b>" in line and "outcome success" in line


def test_redact_secrets():
    cases = {
        "https://api.telegram.org/bot123456:ABC-def_ghi/sendMessage": "https://api.telegram.org/bot***/sendMessage",
        "https://n8n.example/webhook/abc-123-secret": "https://n8n.example/webhook/***",
        "https://n8n.example/webhook-test/abc-123-secret?x=1": "https://n8n.example/webhook-test/***?x=1",
        "https://h.example/in?token=t0k3n&user=bob": "https://h.example/in?token=***&user=bob",
        "https://h.example/in?a=1&api_key=K3Y&sig=S1G&access_token=AT": "https://h.example/in?a=1&api_key=***"
                                                                         "&sig=***&access_token=***",
        "https://hooks.slack.com/services/T0/B0/XyZ": "https://hooks.slack.com/***",
        "postgresql://trader:s3cr3t@127.0.0.1:1/market": "postgresql://trader:***@127.0.0.1:1/market",
        "host=db password=s3cr3t user=x": "host=db password=*** user=x",
        "no secret here: http://mlflow:5000/#/experiments/1": "no secret here: http://mlflow:5000/#/experiments/1",
    }
    for text, expected in cases.items():
        assert redact_secrets(text) == expected, text
    assert "AAsecret" not in redact_secrets("token 987654321:AAsecretTelegramToken_abcdefghijklmnopq leaked")
    assert re.search(r"\*\*\*", redact_secrets("POST /bot1:abc/sendMessage failed"))


def test_a_retried_dead_delivery_gets_a_new_24h_window_and_reports_read_no_history(conn):
    from trading_platform.alerts import delivery

    dest = add_destination(conn, "old", url_env="TP_OLD_URL")
    [key] = enqueue(conn, dest, notify=False)
    conn.execute("UPDATE alert_deliveries SET created_at = now() - interval '2 days', status = 'dead'")
    assert delivery.retry(conn, destination="old") == 1
    [unit] = delivery.claim(conn, dest, 10)
    # a 500 two days after its creation: without the new window the row would be dead at once
    [(_, st)] = delivery.mark_failed(conn, unit, 500, "HTTP 500", retry=True, delay_s=0)
    assert st == "pending"
    [d] = delivery.destination_status(conn)
    assert d["deliveries"]["pending"] == 1 and d["last_error"] == "HTTP 500"


def test_a_worker_sigkilled_after_the_post_before_its_commit_resends_the_same_key_once(dsn, conn, receivers,
                                                                                         monkeypatch):
    """A real worker process (``tp alerts deliver``) is SIGKILLed by the receiver while the POST is in flight:
    the receiver has the message, the database does not know. The next worker sends it again under the same key,
    and it is marked delivered once."""
    import os
    import signal
    import subprocess
    import sys

    procs: list[subprocess.Popen] = []

    def respond(req, i):
        if i == 0:
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait(10)
        return 200, {}, b"ok"

    rec = receivers(respond)
    monkeypatch.setenv("TP_KILL_URL", rec.url())
    dest = add_destination(conn, "kill", url_env="TP_KILL_URL")
    [key] = enqueue(conn, dest)
    env = {**os.environ, "TP_DATABASE_URL": dsn, "TP_EMBEDDED": "0", "TP_KILL_URL": rec.url()}
    cmd = [sys.executable, "-m", "trading_platform.cli", "alerts", "deliver", "--poll-s", "0.2"]
    procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wait_until(lambda: procs[0].poll() is not None, timeout=60)
    assert procs[0].returncode == -signal.SIGKILL and rec.keys() == [key]
    [row] = rows(conn, dest)
    assert row["status"] == "sending" and row["delivered_at"] is None  # claimed, never committed as delivered
    conn.execute("UPDATE alert_deliveries SET claimed_at = now() - interval '1 hour'")  # past the reclaim time
    with worker(dsn):
        wait_until(all_status(conn, dest, "delivered"))
    assert rec.keys() == [key, key]  # the same key again: the receiver can drop the repeat
    [row] = rows(conn, dest)
    assert row["attempts"] == 2 and row["status"] == "delivered"


def test_reports_use_the_workers_own_view_of_its_environment(dsn, conn, receivers, monkeypatch):
    """The variables must be set where the worker runs: a report from another process (an asset run, the CLI)
    that lacks them shows what the worker saw, not 'misconfigured'."""
    rec = receivers()
    monkeypatch.setenv("TP_VIEW_URL", rec.url())
    add_destination(conn, "view", url_env="TP_VIEW_URL")
    with worker(dsn):
        wait_until(lambda: conn.execute("SELECT worker_seen_at IS NOT NULL FROM alert_destinations").fetchone()[0])
    monkeypatch.delenv("TP_VIEW_URL")
    [d] = delivery.destination_status(conn)
    assert (d["state"], d["checked_by"]) == ("ok", "worker")
    conn.execute("UPDATE alert_destinations SET worker_seen_at = now() - interval '2 minutes'")  # no worker now
    [d] = delivery.destination_status(conn)
    assert (d["state"], d["checked_by"], d["unset"]) == ("misconfigured", "here", "TP_VIEW_URL")


def test_a_bad_delivery_retention_names_its_variable(monkeypatch):
    for bad in ("0", "-1", "soon", "0.5"):
        monkeypatch.setenv("TP_ALERT_DELIVERY_RETENTION_DAYS", bad)
        with pytest.raises(InvalidInput) as e:
            delivery.retention_days()
        assert e.value.field == "TP_ALERT_DELIVERY_RETENTION_DAYS" and bad in e.value.message
    monkeypatch.setenv("TP_ALERT_DELIVERY_RETENTION_DAYS", "45")
    assert delivery.retention_days() == 45.0
