"""`tp up` opens the Dagster UI without its first-visit modal in the way, and keeps its console quiet."""

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str) -> dict | None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())["data"]
    except (urllib.error.URLError, OSError, ValueError):
        return None


def test_tp_up_marks_dagsters_first_visit_modal_as_seen(tp_env, tmp_path):
    port = _free_port()
    env = {**tp_env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    up = subprocess.Popen([sys.executable, "-m", "trading_platform.cli", "up", "--no-sample", "--no-mlflow",
                           "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    shown = None
    try:
        deadline = time.time() + 120
        while time.time() < deadline and up.poll() is None:
            data = _graphql(port, "{ shouldShowNux }")
            if data is not None:
                shown = data["shouldShowNux"]
                if shown is False:
                    break
            time.sleep(1)
    finally:
        up.send_signal(signal.SIGINT)
        _, err = up.communicate(timeout=60)
    assert shown is False, f"the webserver {'never answered' if shown is None else 'still shows the modal'}:\n{err}"


def _answers(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # our own services: never a proxy
    try:
        with opener.open(url, timeout=5) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def test_tp_up_is_quiet_over_a_minute_of_idle_live_symbols(tp_env, tmp_path):
    """The console of `tp up` (the MLflow UI too) with two live symbols and no events: the banner once both
    UIs answer, then no line per sensor tick (the live sensor ticks every 5 s) and none of Dagster's
    BetaWarnings (its code server and every run worker load the definitions)."""
    env = {**tp_env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    for symbol in ("BTC/USDT", "ETH/USDT"):
        subprocess.run([sys.executable, "-m", "trading_platform.cli", "symbols", "add", symbol, "--live",
                        "--category", "crypto", "--exchange", "binance", "--timeframes", "1m"],
                       env=env, check=True, capture_output=True)
    port, mlflow_port = _free_port(), _free_port()
    ui = {"dagster": f"http://127.0.0.1:{port}/server_info", "mlflow": f"http://127.0.0.1:{mlflow_port}/health"}
    up = subprocess.Popen([sys.executable, "-m", "trading_platform.cli", "up", "--no-sample", "--port", str(port),
                           "--mlflow-port", str(mlflow_port)], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    banner = threading.Event()
    answered_at_banner: dict[str, bool] = {}

    def read():
        for line in up.stdout:
            lines.append(line.rstrip("\n"))
            if "Dagster UI http" in line and not banner.is_set():
                answered_at_banner.update({name: _answers(url) for name, url in ui.items()})
                banner.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        banner.wait(timeout=150)
        if banner.is_set():
            time.sleep(60)  # a minute of idle live symbols: a dozen live-sensor ticks
        console = list(lines)
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)
        reader.join(timeout=10)
    shown = "\n".join(console)
    assert banner.is_set(), f"no banner:\n{shown}"
    assert answered_at_banner == {"dagster": True, "mlflow": True}, (answered_at_banner, shown)
    assert not [line for line in console if "sensor" in line.lower()], shown
    assert "BetaWarning" not in shown and "Warning:" not in shown, shown
    assert len(console) <= 8, shown  # the banner and what a user must act on (nothing, here)
