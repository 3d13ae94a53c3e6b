"""`tp alerts` as a user runs it: rules and destinations round trip, bad input names its option, and no output
ever shows a secret a destination's environment variable holds."""

import http.server
import json
import signal
import subprocess
import sys
import threading
import time
from typing import ClassVar

import psycopg
import pytest

SECRET_URL = "https://hooks.example.com/services/T0AAA/B0BBB/s3cr3tPathXYZ"
SECRET_PATH = "/services/T0AAA/B0BBB/s3cr3tPathXYZ"
BOT_TOKEN = "123456789:AAHfiqksKZ8WmR2zSjiQ7_v4TMAKdiHm9T0"


def tp(env, *args, check=True):
    out = subprocess.run([sys.executable, "-m", "trading_platform.cli", "alerts", *args, "--json"], env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    if check and out.returncode != 0:
        raise AssertionError(f"tp alerts {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
    last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "null"
    return out.returncode, json.loads(last), out


def refused(env, field, *args):
    """``tp alerts ARGS`` exits 2 naming ``field``; the error and the process."""
    code, err, proc = tp(env, *args, check=False)
    assert code == 2 and err["field"] == field, (args, code, err, proc.stderr)
    assert "Traceback" not in proc.stderr
    return err, proc


@pytest.fixture
def env(tp_env, tmp_path):
    """A store with symbol BTC/USDT, a champion pump_xgb and outputs of nhits_fc; an empty MLflow registry."""
    env = {**tp_env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    subprocess.run([sys.executable, "-m", "trading_platform.cli", "symbols", "add", "BTC/USDT", "--timeframes",
                    "5m,1h", "--json"], env=env, check=True, capture_output=True)
    with psycopg.connect(env["TP_DATABASE_URL"], autocommit=True) as conn:
        conn.execute("INSERT INTO model_champions (model_name, version, valid_from, moved_by) "
                     "VALUES ('pump_xgb', '1', now(), 'seed')")
        conn.execute("INSERT INTO output_series VALUES ('forecasts', 'nhits_fc', '2', 'BTC/USDT', '1h', now(), now())")
    return env


def test_rules_round_trip(env):
    _, r1, _ = tp(env, "rule", "add", "pumps", "--model", "pump_xgb", "--symbols", "BTC/USDT", "--timeframes", "5m,H1",
                  "--threshold", "0.7", "--cooldown", "300")
    assert (r1["model"], r1["symbols"], r1["timeframes"], r1["threshold"], r1["side"], r1["cooldown_s"],
            r1["enabled"]) == ("pump_xgb", ["BTC/USDT"], ["5m", "1h"], 0.7, "above", 300, True)
    tp(env, "rule", "add", "dips", "--model", "nhits_fc", "--threshold", "0.2", "--side", "below", "--disabled")
    _, rules, _ = tp(env, "rules")
    assert [(r["name"], r["symbols"], r["enabled"]) for r in rules] == [("dips", None, False),
                                                                       ("pumps", ["BTC/USDT"], True)]
    _, up, _ = tp(env, "rule", "update", "pumps", "--threshold", "0.85", "--symbols", "all", "--disable")
    assert (up["threshold"], up["symbols"], up["timeframes"], up["enabled"]) == (0.85, None, ["5m", "1h"], False)
    _, up, _ = tp(env, "rule", "update", "dips", "--enable", "--model", "pump_xgb")
    assert (up["model"], up["enabled"], up["side"]) == ("pump_xgb", True, "below")

    with psycopg.connect(env["TP_DATABASE_URL"], autocommit=True) as conn:  # an alert the rule made
        conn.execute(
            "INSERT INTO alerts (rule_id, model_name, model_version, symbol, timeframe, ts, candle_close, created_at, "
            "role, value, current_value, threshold, side, target, kind, horizon, entry, status, send) "
            "SELECT id, 'pump_xgb', '1', 'BTC/USDT', '5m', '2026-01-01T00:00Z', '2026-01-01T00:05Z', "
            "'2026-01-01T00:05:01Z', 'champion', 0.9, 0.9, 0.85, 'above', 'pump_5pct_12', 'pump', 12, 100, 'pending', "
            "'send' FROM alert_rules WHERE name = 'pumps'")
    _, gone, _ = tp(env, "rule", "remove", "pumps")
    assert gone["removed_at"] and gone["enabled"] is False and gone["alerts_kept"] == 1
    _, rules, _ = tp(env, "rules")
    assert [r["name"] for r in rules] == ["dips"]
    _, rules, _ = tp(env, "rules", "--all")
    assert [(r["name"], r["removed_at"] is not None) for r in rules] == [("dips", False), ("pumps", True)]
    _, alerts, _ = tp(env, "list", "--model", "pump_xgb", "--status", "pending")  # its alerts stay
    assert [(a["rule"], a["symbol"], a["value"], a["status"]) for a in alerts] == [
        ("pumps", "BTC/USDT", 0.9, "pending")]
    assert tp(env, "list", "--retracted")[1] == []
    refused(env, "symbol", "list", "--symbol", "ETH/USDT")  # not a symbol here: named, not an empty answer

    err, _ = refused(env, "name", "rule", "update", "pumps", "--threshold", "0.5")  # removed
    assert "removed" in err["error"]
    err, _ = refused(env, "name", "rule", "add", "pumps", "--model", "pump_xgb", "--threshold", "0.5")
    assert "exists" in err["error"]
    refused(env, "name", "rule", "add", "dips", "--model", "pump_xgb", "--threshold", "0.5")


RULE_REFUSALS = [
    (("--threshold", "1.5"), "threshold", "from 0 to 1"),
    (("--threshold", "high"), "threshold", "must be a number"),
    (("--threshold", "0.5", "--side", "sideways"), "side", "above, below"),
    (("--threshold", "0.5", "--cooldown", "-1"), "cooldown", "at least 0"),
    (("--threshold", "0.5", "--symbols", "BTC/USDT,NOPE/USDT"), "symbols", "'NOPE/USDT' is not in the symbols"),
    (("--threshold", "0.5", "--timeframes", "5m,2m"), "timeframes", "'2m'"),
    (("--threshold", "0.5", "--model", ""), "model", "empty"),
    (("--threshold", "0.5", "--model", "nope_model"), "model", "the models are nhits_fc, pump_xgb, signal_lgbm"),
    (("--model", "pump_xgb"), "threshold", "required"),
]


def test_rule_bad_input_names_its_option(env):
    from mlflow import MlflowClient  # a model only the registry knows: named among those that exist

    MlflowClient(env["MLFLOW_TRACKING_URI"], env["MLFLOW_TRACKING_URI"]).create_registered_model("signal_lgbm")
    for args, field, says in RULE_REFUSALS:
        err, _ = refused(env, field, "rule", "add", "r", "--model", "pump_xgb", *args)
        assert says in err["error"], (args, err)
    refused(env, "name", "rule", "update", "nothing", "--threshold", "0.5")
    refused(env, "name", "rule", "remove", "nothing")
    refused(env, "status", "list", "--status", "won")
    refused(env, "limit", "list", "--limit", "0")
    refused(env, "since", "stats", "--since", "someday")
    refused(env, "until", "stats", "--since", "2026-02-01", "--until", "2026-01-01")
    refused(env, "timeframe", "stats", "--timeframe", "2m")
    assert tp(env, "stats", "--model", "pump_xgb", "--since", "2026-01-01")[1] == []
    assert tp(env, "rules")[1] == []  # nothing refused was stored


def no_secret_in(*procs):
    for p in procs:
        for text in (p.stdout, p.stderr):
            assert SECRET_URL not in text and SECRET_PATH not in text and BOT_TOKEN not in text


def test_destinations_round_trip_and_bad_input(env):
    env = {**env, "TP_HOOK_URL": SECRET_URL, "TP_HOOK_SECRET": "x" * 32}
    seen = []

    def run(*args):
        _, out, proc = tp(env, *args)
        seen.append(proc)
        return out

    hook = run("destination", "add", "n8n", "--kind", "webhook", "--url-env", "TP_HOOK_URL", "--secret-env",
               "TP_HOOK_SECRET", "--send-mode", "all", "--resolutions", "on", "--models", "pump_xgb",
               "--rate-per-min", "30")
    assert (hook["kind"], hook["url_env"], hook["secret_env"], hook["send_mode"], hook["resolutions"],
            hook["retractions"], hook["models"], hook["rate_per_min"], hook["state"]) == (
        "webhook", "TP_HOOK_URL", "TP_HOOK_SECRET", "all", True, False, ["pump_xgb"], 30, "ok")
    tg = run("destination", "add", "desk", "--kind", "telegram", "--token-env", "TP_TG_TOKEN", "--chat-id",
             "-1001234567890", "--disabled")
    assert (tg["token_env"], tg["chat_id"], tg["enabled"], tg["state"]) == (
        "TP_TG_TOKEN", "-1001234567890", False, "disabled")
    up = run("destination", "update", "n8n", "--send-mode", "positive_only", "--retractions", "on", "--models", "all",
             "--secret-env", "")
    assert (up["send_mode"], up["retractions"], up["resolutions"], up["models"], up["secret_env"]) == (
        "positive_only", True, True, None, None)
    up = run("destination", "update", "desk", "--enable", "--rate-per-min", "20")
    assert (up["enabled"], up["rate_per_min"], up["state"], up["unset"]) == (True, 20, "misconfigured", "TP_TG_TOKEN")
    rows = run("destinations")
    assert [(d["name"], d["state"], d["url_env"], d["token_env"]) for d in rows] == [
        ("desk", "misconfigured", None, "TP_TG_TOKEN"), ("n8n", "ok", "TP_HOOK_URL", None)]  # an unset variable
    with psycopg.connect(env["TP_DATABASE_URL"]) as conn:  # what the worker will read
        assert conn.execute("SELECT name, send_mode, url_env, token_env FROM alert_destinations ORDER BY name"
                            ).fetchall() == [("desk", "alerts_only", None, "TP_TG_TOKEN"),
                                             ("n8n", "positive_only", "TP_HOOK_URL", None)]

    add = ["destination", "add", "x"]
    err, p1 = refused(env, "url_env", *add, "--kind", "webhook", "--url-env", SECRET_URL)  # the value, not its name
    assert "environment variable" in err["error"]
    err, p2 = refused(env, "token_env", *add, "--kind", "telegram", "--token-env", BOT_TOKEN, "--chat-id", "42")
    _, p3 = refused(env, "token_env", *add, "--kind", "telegram", "--token-env", BOT_TOKEN.replace(":", ""),
                    "--chat-id", "42")  # a long token without ':' is not a name either
    _, p4 = refused(env, "secret_env", *add, "--kind", "webhook", "--url-env", "TP_HOOK_URL", "--secret-env",
                    "s3cr3t/value")
    _, p5 = refused({**env, "TP_BAD_URL": "ftp://files.example.com" + SECRET_PATH}, "url_env", *add, "--kind",
                    "webhook", "--url-env", "TP_BAD_URL")  # set, and not http(s)
    no_secret_in(*seen, p1, p2, p3, p4, p5)
    err, _ = refused(env, "send_mode", *add, "--kind", "webhook", "--url-env", "U", "--send-mode", "loud")
    assert all(m in err["error"] for m in ("alerts_only", "all", "positive_only", "negative_only"))
    refused(env, "kind", *add, "--kind", "email")
    refused(env, "kind", *add, "--url-env", "U")
    refused(env, "url_env", *add, "--kind", "webhook")
    refused(env, "token_env", *add, "--kind", "telegram", "--chat-id", "42")
    refused(env, "chat_id", *add, "--kind", "telegram", "--token-env", "T")
    refused(env, "chat_id", *add, "--kind", "telegram", "--token-env", "T", "--chat-id", "my chat")
    refused(env, "rate_per_min", *add, "--kind", "webhook", "--url-env", "U", "--rate-per-min", "0")
    refused(env, "resolutions", *add, "--kind", "webhook", "--url-env", "U", "--resolutions", "maybe")
    refused(env, "models", *add, "--kind", "webhook", "--url-env", "U", "--models", "pump_xgb,ghost")
    refused(env, "url_env", "destination", "update", "desk", "--kind", "webhook")  # incomplete for its new kind
    refused(env, "name", "destination", "add", "n8n", "--kind", "webhook", "--url-env", "U")
    refused(env, "name", "destination", "update", "nothing", "--send-mode", "all")
    refused(env, "name", "destination", "remove", "nothing")
    refused(env, "name", "test", "nothing")
    refused(env, "destination", "deliveries", "--destination", "nothing")
    refused(env, "status", "deliveries", "--status", "lost")
    refused(env, "id", "retry", "--id", "seven")
    refused(env, "poll_s", "deliver", "--poll-s", "0")

    _, gone, _ = tp(env, "destination", "remove", "desk")
    assert gone == {"removed": "desk", "deliveries_deleted": 0, "undelivered_dropped": 0}
    assert [d["name"] for d in tp(env, "destinations")[1]] == ["n8n"]


class Receiver(http.server.BaseHTTPRequestHandler):
    """A webhook receiver: records what it is sent, answers ``status``."""

    status = 200
    got: ClassVar[list] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.got.append((self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(body)))
        self.send_response(Receiver.status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    Receiver.status, Receiver.got = 200, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_test_message_retry_and_the_worker(env, receiver):
    secret_path = "/webhook/7f3c9a51-secret-path"
    env = {**env, "TP_HOOK_URL": receiver + secret_path, "TP_HOOK_SECRET": "whsec_" + "QUJD" * 8,
           "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    procs = []

    def run(*args, check=True):
        code, out, proc = tp(env, *args, check=check)
        procs.append(proc)
        return code, out

    run("destination", "add", "n8n", "--kind", "webhook", "--url-env", "TP_HOOK_URL", "--secret-env", "TP_HOOK_SECRET")
    code, out = run("test", "n8n")
    assert code == 0 and out["ok"] and out["status"] == 200
    [(path, headers, body)] = Receiver.got
    assert path == secret_path and body["type"] == "test" and headers["webhook-signature"].startswith("v1,")
    Receiver.status = 500
    code, out = run("test", "n8n", check=False)  # the receiver refused: exit 1, what it said
    assert code == 1 and not out["ok"] and out["status"] == 500

    with psycopg.connect(env["TP_DATABASE_URL"], autocommit=True) as conn:  # a delivery that gave up
        [(dead,)] = conn.execute(
            "INSERT INTO alert_deliveries (destination_id, key, type, payload, status, attempts, last_status, "
            "last_error) SELECT id, 'test:1', 'test', '{\"type\": \"test\", \"key\": \"test:1\"}', 'dead', 9, "
            "500, 'HTTP 500 from ' || %s FROM alert_destinations RETURNING id", (env["TP_HOOK_URL"],)).fetchall()
    _, out = run("deliveries", "--status", "dead")
    assert [(d["id"], d["destination"], d["status"], d["attempts"]) for d in out["deliveries"]] == [
        (dead, "n8n", "dead", 9)]
    assert out["summary"]["dead"] == 1 and out["deliveries"][0]["last_error"] == "HTTP 500 from ***"
    assert run("retry", "--id", str(dead))[1] == {"retried": 1}
    _, out = run("deliveries", "--destination", "n8n")
    assert [(d["status"], d["attempts"]) for d in out["deliveries"]] == [("pending", 0)]

    Receiver.status, Receiver.got = 200, []
    worker = subprocess.Popen([sys.executable, "-m", "trading_platform.cli", "alerts", "deliver", "--poll-s", "0.2",
                               "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not Receiver.got and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        worker.send_signal(signal.SIGINT)  # Ctrl-C stops it cleanly
        stdout, stderr = worker.communicate(timeout=30)
    assert worker.returncode == 0, stderr
    assert json.loads(stdout.strip().splitlines()[-1])["delivered"] == 1
    assert [b["key"] for _, _, b in Receiver.got] == ["test:1"]
    for p in [*procs, worker]:
        for text in (p.stdout, p.stderr) if p is not worker else (stdout, stderr):
            assert secret_path not in text and "7f3c9a51" not in text and env["TP_HOOK_SECRET"] not in text


def test_literal_secrets_shaped_like_names_are_refused_and_never_echoed():
    from trading_platform.api.alerts import env_name
    from trading_platform.errors import InvalidInput

    for secret in ("d41d8cd98f00b204e9800998ecf8427e", "mysecretpassword123", "AKIAIOSFODNN7EXAMPLE",
                   "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"):
        with pytest.raises(InvalidInput) as e:
            env_name(secret, "secret_env")
        assert e.value.field == "secret_env" and secret not in e.value.message
    assert [env_name(n, "url_env") for n in ("N8N_ALERTS_URL", "TELEGRAM_BOT_TOKEN", "HOOK_2")] == [
        "N8N_ALERTS_URL", "TELEGRAM_BOT_TOKEN", "HOOK_2"]


def test_a_malformed_webhook_url_misconfigures_its_destination_and_the_worker_serves_the_others(env, receiver):
    env = {**env, "HOOK_GOOD": receiver + "/hook", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    tp(env, "destination", "add", "good", "--kind", "webhook", "--url-env", "HOOK_GOOD")
    tp(env, "destination", "add", "bad", "--kind", "webhook", "--url-env", "HOOK2")  # unset yet: allowed
    env["HOOK2"] = "http://[::1/x"  # then set where the worker runs to what is not a URL
    with psycopg.connect(env["TP_DATABASE_URL"], autocommit=True) as conn:
        conn.execute("INSERT INTO alert_deliveries (destination_id, key, type, payload) SELECT id, 'test:' || name, "
                     "'test', jsonb_build_object('type', 'test', 'key', 'test:' || name) FROM alert_destinations")

    code, rows, proc = tp(env, "destinations")
    assert "Traceback" not in proc.stderr
    assert {d["name"]: (d["state"], d["unset"]) for d in rows} == {"bad": ("misconfigured", "HOOK2"),
                                                                   "good": ("ok", None)}
    assert "http(s) URL" in next(d["reason"] for d in rows if d["name"] == "bad")
    err, _ = refused(env, "url_env", "test", "bad")
    assert "HOOK2" in err["error"] and "[::1" not in err["error"]

    worker = subprocess.Popen([sys.executable, "-m", "trading_platform.cli", "alerts", "deliver", "--poll-s", "0.2",
                               "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not Receiver.got and worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGINT)
        stdout, stderr = worker.communicate(timeout=30)
    assert worker.returncode == 0 and "Traceback" not in stderr, stderr
    assert json.loads(stdout.strip().splitlines()[-1])["delivered"] == 1
    assert [(path, b["key"]) for path, _, b in Receiver.got] == [("/hook", "test:good")]
    with psycopg.connect(env["TP_DATABASE_URL"]) as conn:
        assert dict(conn.execute("SELECT t.name, d.status FROM alert_deliveries d JOIN alert_destinations t "
                                 "ON t.id = d.destination_id").fetchall()) == {"good": "delivered", "bad": "pending"}
        assert conn.execute("SELECT worker_state FROM alert_destinations WHERE name = 'bad'").fetchone() == (
            "misconfigured",)


def test_a_whsec_secret_that_is_not_base64_is_refused_not_used_as_an_empty_key(env, receiver):
    env = {**env, "HOOK": receiver + "/hook", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    tp(env, "destination", "add", "d_set", "--kind", "webhook", "--url-env", "HOOK", "--secret-env", "SEC2")
    for bad in ("whsec_abc", "whsec_", "whsec_!!!!", "whsec_QUJD QUJD"):
        err, _ = refused({**env, "SEC2": bad}, "secret_env", "test", "d_set")
        assert "SEC2" in err["error"] and "base64" in err["error"]
        assert bad == "whsec_" or bad not in err["error"]  # the value is not quoted
        _, rows, proc = tp({**env, "SEC2": bad}, "destinations")
        assert (rows[0]["state"], rows[0]["unset"]) == ("misconfigured", "SEC2") and "Traceback" not in proc.stderr
        refused({**env, "SEC2": bad}, "secret_env", "destination", "add", "d2", "--kind", "webhook", "--url-env",
                "HOOK", "--secret-env", "SEC2")  # set here and unusable: refused when added
    assert Receiver.got == []  # nothing was signed with an empty key
    code, out, _ = tp({**env, "SEC2": "whsec_" + "QUJD" * 8}, "test", "d_set")
    assert code == 0 and out["ok"] and Receiver.got[0][1]["webhook-signature"].startswith("v1,")


def test_numbers_are_plain_decimal_and_bounded(env):
    for args, field in [
            (("rule", "add", "r_us", "--model", "pump_xgb", "--threshold", "0_1"), "threshold"),  # was read as 1
            (("rule", "add", "r_us", "--model", "pump_xgb", "--threshold", "\u0660.\u0665"), "threshold"),  # 0.5
            (("rule", "add", "r_us", "--model", "pump_xgb", "--threshold", "0.5", "--cooldown", "1e300"), "cooldown"),
            (("list", "--limit", "1_0"), "limit"),
            (("deliveries", "--limit", "\u0661\u0660"), "limit"),
            (("retry", "--id", "1_0"), "id"),
            (("destination", "add", "x", "--kind", "webhook", "--url-env", "U", "--rate-per-min", "1e-300"),
             "rate_per_min"),
            (("destination", "add", "x", "--kind", "webhook", "--url-env", "U", "--rate-per-min", "1e308"),
             "rate_per_min"),
            (("deliver", "--poll-s", "1e-300"), "poll_s"),  # was a busy loop
            (("deliver", "--poll-s", "1e308"), "poll_s")]:
        err, _ = refused(env, field, *args)
        assert err["error"].startswith("--" + field.replace("_", "-")), err
    assert tp(env, "rules")[1] == [] and tp(env, "destinations")[1] == []
    _, r, _ = tp(env, "rule", "add", "r_ok", "--model", "pump_xgb", "--threshold", " .25 ", "--cooldown", "6e1")
    assert (r["threshold"], r["cooldown_s"]) == (0.25, 60)


def test_rules_that_could_never_fire_and_empty_lists_are_refused(env):
    with psycopg.connect(env["TP_DATABASE_URL"], autocommit=True) as conn:  # a per-symbol model, a forex symbol
        conn.execute("INSERT INTO model_champions (model_name, version, valid_from, moved_by) "
                     "VALUES ('regime_hmm.BTC_USDT', '1', now(), 'seed')")
        conn.execute("INSERT INTO symbols (symbol, category, timeframes) VALUES ('EURUSD=X', 'forex', '{1h,1d}')")
    hmm = ["--model", "regime_hmm.BTC_USDT", "--threshold", "0.5"]
    err, _ = refused(env, "symbols", "rule", "add", "r", *hmm, "--symbols", "EURUSD=X")
    assert "regime_hmm.BTC_USDT" in err["error"] and "BTC/USDT" in err["error"]
    err, _ = refused(env, "timeframes", "rule", "add", "r", "--model", "pump_xgb", "--threshold", "0.5",
                     "--symbols", "BTC/USDT", "--timeframes", "1m")
    assert "1m" in err["error"] and "5m, 1h" in err["error"]
    refused(env, "timeframes", "rule", "add", "r", *hmm, "--timeframes", "1d")  # EURUSD=X lists 1d, BTC/USDT not
    refused(env, "timeframes", "rule", "add", "r", "--model", "pump_xgb", "--threshold", "0.5", "--timeframes", "1w")
    for option, value in (("--symbols", ",,,"), ("--timeframes", ","), ("--symbols", "")):
        err, _ = refused(env, option[2:], "rule", "add", "r", *hmm, option, value)
        assert "lists nothing" in err["error"]
    refused(env, "models", "destination", "add", "x", "--kind", "webhook", "--url-env", "U", "--models", ",,")
    assert tp(env, "rules")[1] == [] and tp(env, "destinations")[1] == []

    _, r, _ = tp(env, "rule", "add", "r", *hmm, "--timeframes", "1h")  # every symbol: the model's own
    assert (r["symbols"], r["timeframes"]) == (None, ["1h"])
    tp(env, "rule", "add", "cross", "--model", "pump_xgb", "--threshold", "0.5", "--timeframes", "1d")  # EURUSD=X
    refused(env, "symbols", "rule", "update", "r", "--symbols", "EURUSD=X")
    refused(env, "timeframes", "rule", "update", "r", "--timeframes", "5m,1d")  # 5m: BTC/USDT's; 1d: none
    _, r, _ = tp(env, "rule", "update", "r", "--model", "pump_xgb", "--symbols", "EURUSD=X")  # its 1h: EURUSD's too
    assert (r["model"], r["symbols"], r["timeframes"]) == ("pump_xgb", ["EURUSD=X"], ["1h"])


def test_names_with_control_characters_or_no_end_are_refused(env):
    add = ["--model", "pump_xgb", "--threshold", "0.5"]
    for name in ("r\x01\x1b[31mred\n2", "r" * 100_000, "a\u2028b"):
        err, proc = refused(env, "name", "rule", "add", name, *add)
        assert "\x1b" not in proc.stdout + proc.stderr and len(proc.stdout) < 1000
    refused(env, "name", "destination", "add", "d\x1b[2J", "--kind", "webhook", "--url-env", "U")
    refused(env, "model", "rule", "add", "r", "--model", "pump_xgb\x07", "--threshold", "0.5")
    refused(env, "symbols", "rule", "add", "r", *add, "--symbols", "BTC/USDT,ETH\x1b[0m")
    assert tp(env, "rules")[1] == [] and tp(env, "destinations")[1] == []

    with psycopg.connect(env["TP_DATABASE_URL"], autocommit=True) as conn:  # a name stored before the check
        conn.execute("INSERT INTO alert_rules (name, model_name, threshold) VALUES (%s, 'pump_xgb', 0.5)",
                     ("old\x1b[31mred",))
    out = subprocess.run([sys.executable, "-m", "trading_platform.cli", "alerts", "rules"], env=env,
                         capture_output=True, text=True, timeout=120, check=True)
    assert "\x1b" not in out.stdout and "old\\x1b[31mred" in out.stdout


def test_chat_ids_past_int64_and_unknown_filters_are_refused(env):
    tg = ["destination", "add", "desk", "--kind", "telegram", "--token-env", "TP_TG_TOKEN", "--chat-id"]
    refused(env, "chat_id", *tg, "99999999999999999999")
    refused(env, "chat_id", *tg, "-9999999999999999999")
    assert tp(env, *tg, "-1001234567890")[1]["chat_id"] == "-1001234567890"
    err, _ = refused(env, "model", "list", "--model", "nope")
    assert "unknown model 'nope'" in err["error"] and "pump_xgb" in err["error"]
    err, _ = refused(env, "symbol", "list", "--symbol", "NOPE")
    assert "'NOPE'" in err["error"]
    refused(env, "model", "stats", "--model", "nope", "--symbol", "BTC/USDT")
    refused(env, "symbol", "stats", "--model", "pump_xgb", "--symbol", "NOPE/X")
    assert tp(env, "list", "--model", "pump_xgb", "--symbol", "BTC/USDT")[1] == []
    assert tp(env, "stats", "--model", "nhits_fc", "--symbol", "BTC/USDT")[1] == []


def test_names_that_are_not_utf8_are_refused_by_the_api(store):
    """A name holding lone surrogates (what undecodable bytes become, ``os.fsdecode(b'r\\xff')``) is refused
    before the store sees it (psycopg cannot encode it); the CLI refuses such arguments on its own."""
    from trading_platform.api import alerts as api
    from trading_platform.errors import InvalidInput

    store.conn.execute("INSERT INTO model_champions (model_name, version, valid_from, moved_by) "
                       "VALUES ('pump_xgb', '1', now(), 'seed')")
    for call, field in [
            (lambda: api.add_rule("r\udcff\udcfe", model="pump_xgb", threshold=0.5, store=store), "name"),
            (lambda: api.add_rule("r", model="pump_xgb", threshold=0.5, symbols="BTC/USDT,\udcff", store=store),
             "symbols"),
            (lambda: api.list_alerts(symbol="\udcfe", store=store), "symbol"),
            (lambda: api.deliveries(destination="d\udcff", store=store), "destination")]:
        with pytest.raises(InvalidInput) as e:
            call()
        assert e.value.field == field and "not valid text" in str(e.value)
    assert api.list_rules(store=store) == []
