"""`tp up` opens the Dagster UI without its first-visit modal in the way."""

import json
import signal
import socket
import subprocess
import sys
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
