"""MLflow behind its basic-auth app, as compose runs it: a real `mlflow server --app-name basic-auth`, the users
made by trading_platform.resources.mlflow_auth, the platform training and registering as its user, the faces'
read-only user reading and serving but never moving an alias or registering a version, anyone else refused."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from test_models_mlflow import ANY_BASELINE, STRONG, md

ADMIN, PLATFORM, READER = ("admin", "admin-pass-5f1a9c"), ("tp_platform", "pf-pass-82be41d0"), \
    ("tp_reader", "rd-pass-3c77e2a9")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mlflow-auth")
    ini = tmp / "basic_auth.ini"  # what compose's mlflow service writes at start
    ini.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{tmp}/m.db\n"
                   f"admin_username = {ADMIN[0]}\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    port = _port()
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
           "MLFLOW_FLASK_SERVER_SECRET_KEY": os.urandom(16).hex()}
    for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_URI"):
        env.pop(k, None)
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "mlflow"), "server", "--app-name",
                             "basic-auth", "--backend-store-uri", f"sqlite:///{tmp}/m.db", "--serve-artifacts",
                             "--artifacts-destination", str(tmp / "artifacts"), "--host", "127.0.0.1", "--port",
                             str(port), "--workers", "1"], env=env, stdout=log, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        raise AssertionError((tmp / "server.log").read_text()[-3000:])
    yield uri, tmp
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def _users(uri):
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
           "TP_MLFLOW_PLATFORM_PASSWORD": PLATFORM[1], "TP_MLFLOW_READER_PASSWORD": READER[1]}
    return subprocess.run([sys.executable, "-m", "trading_platform.resources.mlflow_auth"], env=env,
                          capture_output=True, text=True, timeout=180)


def test_only_the_platform_writes_the_reader_reads_and_anyone_else_is_refused(server, model_env, monkeypatch,
                                                                               tmp_path):
    from mlflow import MlflowClient

    from trading_platform.assets.models import pump_xgb
    from trading_platform.resources import MLflowResource, ModelServer, serving

    uri, _ = server
    first = _users(uri)
    assert first.returncode == 0, first.stderr
    assert "'tp_platform': 'created'" in first.stdout and "'tp_reader': 'created'" in first.stdout
    again = _users(uri)  # every deploy: the passwords of docker/.env take effect
    assert again.returncode == 0 and "'tp_platform': 'password updated'" in again.stdout
    for secret in (ADMIN[1], PLATFORM[1], READER[1]):
        assert secret not in first.stdout + first.stderr + again.stdout + again.stderr
    # anyone without credentials, or with wrong ones
    for auth in (None, ("tp_platform", "wrong-password-123")):
        req = urllib.request.Request(f"{uri}/api/2.0/mlflow/registered-models/search")
        if auth:
            import base64

            req.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 401
    # the platform trains and registers as its user (MLFLOW_TRACKING_USERNAME/PASSWORD, as compose sets them)
    run, res, _ = model_env
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", PLATFORM[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PLATFORM[1])
    mlflow_res = MLflowResource(tracking_uri=uri)
    res["mlflow"] = mlflow_res
    res["model_server"] = ModelServer(tracking_uri=uri, cache_dir=str(tmp_path / "cache"), device="cpu")
    assert md(run(pump_xgb, {**STRONG, **ANY_BASELINE}), pump_xgb)["gate_decision"] == "champion"
    # the faces' read-only user: reads, downloads and serves (the signature checked); never writes
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", READER[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", READER[1])
    serving._MEMORY.clear()
    serving._VERIFIED.clear()
    reader = MlflowClient(uri, uri)
    assert str(reader.get_model_version_by_alias("pump_xgb", "champion").version) == "1"
    loaded = ModelServer(tracking_uri=uri, cache_dir=str(tmp_path / "reader-cache"), device="cpu").load("pump_xgb")
    assert loaded.version == "1" and loaded.flavor == "xgboost"
    for write in (lambda: reader.set_registered_model_alias("pump_xgb", "champion", "1"),
                  lambda: reader.create_model_version("pump_xgb", source="mlflow-artifacts:/x"),
                  lambda: reader.set_model_version_tag("pump_xgb", "1", "tp.signature", "v1:00000000:forged"),
                  lambda: reader.delete_registered_model("pump_xgb")):
        with pytest.raises(Exception, match="403"):
            write()
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", PLATFORM[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PLATFORM[1])
    assert (MlflowClient(uri, uri).get_model_version("pump_xgb", "1").tags or {})["tp.signature"].startswith("v1:")
