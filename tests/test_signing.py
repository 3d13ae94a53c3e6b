"""Signed model versions: a version registered by anyone but the platform (the registry has no say over what
runs) is never deserialized, its predecessor keeps serving, and the user and the watchdog are told why. Real
MLflow, PostgreSQL and Dagster."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest

from test_models_mlflow import ANY_BASELINE, APRIL, STRONG, md
from trading_platform.assets.models import predictions, pump_xgb
from trading_platform.errors import InvalidInput
from trading_platform.models import signing
from trading_platform.models.registry import list_models, promote
from trading_platform.resources import ModelServer, serving
from trading_platform.resources.serving import ModelRefused
from trading_platform.store.db import connect
from trading_platform.watchdog import checks


def _crafted_version(client, tmp_path, name: str, tags: dict) -> str:
    """A version registered by hand, as anyone reaching the registry could: a pyfunc whose regime_model artifact
    is a pickle that creates ``tmp_path/pwned`` when loaded, with the platform's tags."""
    import mlflow

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    # pickle opcodes for os.system-free code: builtins.exec("open(marker, 'w').write('x')")
    code = f"open({str(marker)!r}, 'w').write('x')"
    evil.write_bytes(b"cbuiltins\nexec\n(V" + code.encode() + b"\ntR.")

    class Plain(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    mlflow.set_tracking_uri(client.tracking_uri)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=Plain(), artifacts={"regime_model": str(evil)},
                                       registered_model_name=name)
    version = str(info.registered_model_version)
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, v)
    return version


@pytest.mark.parametrize("forged", [False, True], ids=["unsigned", "signature-copied-from-v1"])
def test_a_crafted_champion_is_never_unpickled_and_its_predecessor_keeps_serving(model_env, tmp_path, forged):
    run, res, dsn = model_env
    client, server = res["mlflow"].client(), res["model_server"]
    assert md(run(pump_xgb, {**STRONG, **ANY_BASELINE}), pump_xgb)["gate_decision"] == "champion"
    v1 = client.get_model_version("pump_xgb", "1").tags
    assert v1[signing.TAG].startswith("v1:")  # signed at registration
    key = os.environ[signing.ENV]
    mlrun = client.get_run(client.get_model_version("pump_xgb", "1").run_id).data
    assert key not in str(v1) + str(mlrun.tags) + str(mlrun.params)  # the key itself is nowhere in MLflow
    tags = {k: v for k, v in v1.items() if k.startswith("tp.") and (forged or k != signing.TAG)}
    crafted = _crafted_version(client, tmp_path, "pump_xgb", tags)
    client.set_registered_model_alias("pump_xgb", "champion", crafted)
    marker = tmp_path / "pwned"

    # the predictions run: version 1 serves, the crafted one is never loaded
    p = md(run(predictions, partition_key=APRIL), predictions)
    assert not marker.exists()
    with psycopg.connect(dsn) as c:
        served = {r[0] for r in c.execute("SELECT DISTINCT model_version FROM predictions WHERE model_name = "
                                          "'pump_xgb'")}
        history = c.execute("SELECT version FROM model_champions WHERE model_name = 'pump_xgb' AND alias = "
                            "'champion' AND valid_to IS NULL").fetchall()
    assert served == {"1"} and p["by_model"]["pump_xgb"] > 0
    assert history == [("1",)]  # the champion history says what serves, not the refused move
    # asked for it by number, the serving resource refuses too, before deserializing
    with pytest.raises(ModelRefused) as e:
        ModelServer(tracking_uri=client.tracking_uri, cache_dir=str(tmp_path / "other-cache")).load(
            "pump_xgb", version=crafted)
    assert not marker.exists()
    # unsigned: refused on its tag alone, nothing downloaded; a copied signature is checked against the bytes
    assert (tmp_path / "other-cache" / "pump_xgb" / crafted / "MLmodel").exists() is forged
    why = "does not match its artifacts" if forged else "not signed"
    assert why in str(e.value)
    # tp models list says why; tp models promote refuses, naming it
    [m] = [m for m in list_models(client, server) if m["name"] == "pump_xgb"]
    by_version = {v["version"]: v for v in m["versions"]}
    assert by_version[crafted]["serve"].startswith("refused") and why in by_version[crafted]["serve"]
    assert by_version["1"]["serve"] == "signed (not checked)" or by_version["1"]["serve"] == "verified"
    with connect(dsn) as store, pytest.raises(InvalidInput, match="cannot serve"):
        promote(client, "pump_xgb", crafted, conn=store.conn, server=server)
    # the watchdog is told, and recovers once the alias moves back
    now = datetime.now(timezone.utc)
    with connect(dsn) as store:
        t = checks.thresholds(environ={})
        obs = checks.model_refused(checks.Look(store.conn, now, t))
        assert obs.failing and obs.subjects == [f"pump_xgb v{crafted}"] and why in obs.detail
        client.set_registered_model_alias("pump_xgb", "champion", "1")
        from trading_platform.models.scoring import resolve_versions

        assert [(v.name, v.version) for v in resolve_versions(client, conn=store.conn, server=server)] == \
            [("pump_xgb", "1")]
        assert checks.model_refused(checks.Look(store.conn, now, t)).failing is False
    assert not marker.exists()


def test_tp_models_list_and_promote_say_why_on_the_command_line(model_env, tmp_path):
    run, res, dsn = model_env
    client = res["mlflow"].client()
    run(pump_xgb, {**STRONG, **ANY_BASELINE})
    crafted = _crafted_version(client, tmp_path, "pump_xgb",
                               {k: v for k, v in client.get_model_version("pump_xgb", "1").tags.items()
                                if k.startswith("tp.") and k != signing.TAG})
    client.set_registered_model_alias("pump_xgb", "challenger", crafted)
    env = {**os.environ, "TP_DATABASE_URL": dsn, "MLFLOW_TRACKING_URI": client.tracking_uri, "TP_EMBEDDED": "1",
           "TP_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-m", "trading_platform.cli", "models", "list"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "serve         refused: it is not signed" in out.stdout
    promoted = subprocess.run([sys.executable, "-m", "trading_platform.cli", "models", "promote", "pump_xgb", crafted],
                              env=env, capture_output=True, text=True, timeout=300)
    assert promoted.returncode != 0 and "cannot serve: it is not signed" in promoted.stderr
    assert client.get_model_version_by_alias("pump_xgb", "champion").version == 1
    assert not (tmp_path / "pwned").exists()
    # tp models sign vouches for a version (what a user does for one registered before signatures)
    signed = subprocess.run([sys.executable, "-m", "trading_platform.cli", "models", "sign", "pump_xgb", "1"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert signed.returncode == 0 and "signed with this platform's key" in signed.stdout
    assert os.environ["TP_MODEL_SIGNING_KEY"] not in out.stdout + signed.stdout + signed.stderr


def test_changed_artifacts_are_never_loaded_a_stale_cache_is_fetched_again(model_env, tmp_path):
    """The signature is checked over the bytes about to be loaded, in every process. A model file changed in the
    cache (a shared volume) is not loaded: the registry's copy is fetched again and verified. Changed in the
    artifact store itself, the version is refused."""
    from urllib.parse import urlparse

    import yaml

    run, res, _ = model_env
    client = res["mlflow"].client()
    run(pump_xgb, {**STRONG, **ANY_BASELINE})
    cache = tmp_path / "cache2"
    server = ModelServer(tracking_uri=client.tracking_uri, cache_dir=str(cache), device="cpu")
    genuine = server.load("pump_xgb", version="1").model.save_raw()
    where = cache / "pump_xgb" / "1"
    data = yaml.safe_load((where / "MLmodel").read_text())["flavors"]["xgboost"]["data"]
    (where / data).write_bytes((where / data).read_bytes() + b" ")
    serving._MEMORY.clear()  # a new process
    assert server.load("pump_xgb", version="1").model.save_raw() == genuine
    # the artifact store's copy changed: refused, whatever the cache holds
    stored = Path(urlparse(client.get_model_version_download_uri("pump_xgb", "1")).path) / data
    stored.write_bytes(stored.read_bytes() + b" ")
    (where / data).write_bytes(stored.read_bytes())
    serving._MEMORY.clear()
    with pytest.raises(ModelRefused, match="does not match its artifacts"):
        server.load("pump_xgb", version="1")


def test_the_embedded_key_is_generated_once_readable_by_its_owner_only(tmp_path, monkeypatch):
    from trading_platform.settings import get_settings

    monkeypatch.delenv(signing.ENV, raising=False)
    monkeypatch.setenv("TP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TP_EMBEDDED", "1")
    key = signing.signing_key(get_settings())
    path = signing.key_path(get_settings())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert signing.signing_key(get_settings()) == key and len(key) >= signing.MIN_KEY_CHARS
    art = tmp_path / "art"
    art.mkdir()
    (art / "model.bin").write_bytes(b"weights")
    sig = signing.sign(art, "m", key)
    assert signing.refusal(art, "m", sig, key) is None
    assert "does not match" in signing.refusal(art, "other", sig, key)  # bound to the model's name
    assert "another key" in signing.refusal(art, "m", sig, b"k" * 40)
    os.chmod(path, 0o644)
    with pytest.raises(InvalidInput, match="chmod 600"):
        signing.signing_key(get_settings())
    monkeypatch.setenv(signing.ENV, "change-me-signing-key-of-32-characters-or-more")  # .env.example's
    with pytest.raises(InvalidInput, match="placeholder"):
        signing.signing_key(get_settings())
    monkeypatch.setenv(signing.ENV, "short")
    with pytest.raises(InvalidInput, match="TP_MODEL_SIGNING_KEY must hold at least 32"):
        signing.signing_key(get_settings())
    monkeypatch.delenv(signing.ENV)
    monkeypatch.setenv("TP_EMBEDDED", "0")
    with pytest.raises(InvalidInput, match="TP_MODEL_SIGNING_KEY is not set and the platform is not embedded"):
        signing.signing_key(get_settings())
