"""Serving: load registered models in their native flavor, cache them, predict in batches.

``load("pump_xgb")`` resolves ``models:/pump_xgb@champion`` to a version, keeps
the version's artifacts on disk under ``$TP_HOME/model_cache/<name>/<version>``
(every run is a new process: the disk cache makes the second one fast) and the
loaded model in memory by version.

Alias resolution is cached for ``alias_ttl_s`` seconds (default 5; 0 asks the
registry on every call), in memory and on disk beside the artifacts, so a one-row
``predict`` makes no registry round-trip and a new process whose cache is fresh
loads its model without importing MLflow at all; a moved alias is picked up once
the cached resolution is older than the TTL. ``load(name, version=...)`` pins a
version (what a run that must not change models mid-way does).

If MLflow is unreachable it serves the last version it resolved for that alias
and says so in the log; a model that cannot be loaded at all raises an error
naming the model and the version.

Nothing is deserialized before its signature is checked (``models/signing.py``): the version's
``tp.signature`` tag, kept beside the cached artifacts, must be this platform's HMAC over exactly those
bytes. A version that is unsigned, signed with another key or tampered with raises ``ModelRefused``
(``refusal`` says why without loading anything).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Optional

from dagster import ConfigurableResource
from pydantic import Field

log = logging.getLogger(__name__)
_MEMORY: dict[tuple[str, str, str], Any] = {}
_ALIASES: dict[tuple[str, str, str], tuple[str, float]] = {}  # (uri, name, alias) -> (version, resolved at)
_VERIFIED: dict[tuple[str, str, str], str] = {}  # (uri, name, version) -> the signature checked in this process
_REFETCHED: dict[tuple[str, str, str], str] = {}  # (uri, name, version) -> the tag its artifacts were fetched again for
UNREACHABLE_RETRY_S = 5.0  # after a failed look-up, the registry is asked again this much later at the earliest
REGISTRY_CALLS = {"resolve": 0}  # alias look-ups that reached the registry (observable by tests and benchmarks)


def resolve_device(setting: str) -> str:
    """``cpu`` or ``cuda``: ``auto`` picks CUDA when a GPU is visible (NVIDIA desktop or Jetson)."""
    setting = (setting or "auto").lower()
    if setting in ("cpu", "cuda"):
        return setting
    if os.path.exists("/dev/nvidia0") or os.path.exists("/dev/nvhost-ctrl") or shutil.which("nvidia-smi"):
        return "cuda"
    return "cpu"


class ModelLoadError(RuntimeError):
    pass


class ModelRefused(ModelLoadError):
    """A version this platform will not load: its signature is missing or wrong (``reason`` says which)."""

    def __init__(self, name: str, version: str, reason: str):
        super().__init__(f"model {name} version {version} is refused: {reason}")
        self.name, self.version, self.reason = name, str(version), reason


class LoadedModel:
    def __init__(self, name: str, version: str, flavor: str, model: Any, feature_names: list[str] | None,
                 calibration: dict | None = None):
        self.name, self.version, self.flavor, self.model = name, version, flavor, model
        self.feature_names = feature_names
        self.calibration = calibration  # {"method": "platt", "a": .., "b": ..} for the classifiers

    def predict(self, X):
        """Batch prediction on a 2-D float array (columns in feature_names order): calibrated
        probabilities for the classifiers, filtered regime probabilities for the regime model."""
        if self.flavor in ("xgboost", "lightgbm") and self.calibration:
            import numpy as np

            m = (self.model.inplace_predict(X, predict_type="margin") if self.flavor == "xgboost"
                 else self.model.predict(X, raw_score=True))
            return 1 / (1 + np.exp(-(self.calibration["a"] * m + self.calibration["b"])))
        if self.flavor == "xgboost":
            return self.model.inplace_predict(X)
        if self.flavor == "lightgbm":
            return self.model.predict(X)
        if hasattr(self.model, "filtered_proba"):
            return self.model.filtered_proba(X)
        return self.model.predict(X)


class ModelServer(ConfigurableResource):
    tracking_uri: Optional[str] = Field(default=None, description="MLflow URI (default MLFLOW_TRACKING_URI)")
    cache_dir: Optional[str] = Field(default=None, description="artifact cache (default $TP_HOME/model_cache)")
    device: str = Field(default="auto", description="auto, cpu or cuda (TP_DEVICE)")
    alias_ttl_s: float = Field(default=5.0, ge=0, description="how long a resolved alias is trusted (0: every call)")

    def _uri(self) -> str:
        from .mlflow import default_tracking_uri

        return self.tracking_uri or default_tracking_uri()

    def _cache(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir)
        from ..settings import get_settings

        return get_settings().home / "model_cache"

    def _client(self):
        from .mlflow import MLflowResource

        # fail fast when the tracking server is down: the disk cache is the fallback, and
        # MLflow's default retries would hold a run for minutes
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        return MLflowResource(tracking_uri=self._uri()).client()

    def resolve(self, name: str, alias: str = "champion") -> str:
        """Version behind name@alias: from memory or the disk memo while younger than ``alias_ttl_s``,
        else from the registry (remembered on disk, also for when MLflow is down)."""
        key, now = (self._uri(), name, alias), time.time()
        hit = _ALIASES.get(key)
        if hit and now - hit[1] < self.alias_ttl_s:
            return hit[0]
        memo = self._cache() / name / "aliases.json"
        known = _read_memo(memo)
        entry = known.get(alias)
        if entry and self.alias_ttl_s > 0 and 0 <= now - entry["at"] < self.alias_ttl_s:
            _ALIASES[key] = (entry["version"], entry["at"])
            return entry["version"]
        try:
            REGISTRY_CALLS["resolve"] += 1
            version = str(self._client().get_model_version_by_alias(name, alias).version)
        except Exception as e:  # noqa: BLE001 - connection errors differ by store
            from mlflow.exceptions import MlflowException

            if isinstance(e, MlflowException) and e.error_code in ("RESOURCE_DOES_NOT_EXIST",
                                                                   "INVALID_PARAMETER_VALUE"):
                raise ModelLoadError(f"{name}@{alias} does not exist: {e.message}") from None
            if not entry:
                raise ModelLoadError(f"cannot resolve {name}@{alias}: MLflow unreachable ({e}) "
                                     "and no version cached") from None
            log.warning("MLflow unreachable (%s); serving cached %s@%s = version %s", e, name, alias,
                        entry["version"])
            # asked again only after a while: every attempt can cost the client's timeout
            _ALIASES[key] = (entry["version"], now - self.alias_ttl_s + max(self.alias_ttl_s, UNREACHABLE_RETRY_S))
            return entry["version"]
        _ALIASES[key] = (version, now)
        known[alias] = {"version": version, "at": now}
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f".aliases.{os.getpid()}.json")
        tmp.write_text(json.dumps(known))
        tmp.replace(memo)
        return version

    def _artifacts(self, name: str, version: str) -> Path:
        target = self._cache() / name / version
        if (target / "MLmodel").exists():
            return target
        tmp = target.with_name(f".{version}.{os.getpid()}")
        try:
            import mlflow

            client = self._client()
            mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(tmp))
            _write_sidecar(tmp, self._signature_tag(client, name, version))
            tmp.replace(target) if not target.exists() else shutil.rmtree(tmp)
        except Exception as e:  # noqa: BLE001
            shutil.rmtree(tmp, ignore_errors=True)
            raise ModelLoadError(f"cannot fetch model {name} version {version}: {e}") from None
        return target

    @staticmethod
    def _signature_tag(client, name: str, version: str) -> str:
        from ..models.signing import TAG

        return (client.get_model_version(name, str(version)).tags or {}).get(TAG, "")

    def _registry_tag(self, name: str, version: str) -> str:
        try:
            return self._signature_tag(self._client(), name, version)
        except Exception as e:  # noqa: BLE001 - connection errors differ by store
            raise ModelLoadError(f"cannot read the signature of model {name} version {version}: {e}") from None

    def refusal(self, name: str, version: str) -> str | None:
        """Why ``name`` ``version`` must not be served (None: its signature is this platform's, over the bytes in
        the cache). Fetches the artifacts when they are not cached; deserializes nothing."""
        from ..models.signing import SIDECAR, precheck, refusal

        version = str(version)
        key = (self._uri(), name, version)
        if not (self._cache() / name / version / "MLmodel").exists():
            # not fetched yet: a tag that cannot verify refuses the version before any byte is downloaded (an
            # unsigned multi-GB version registered by anyone costs a registry call, not a download)
            early = precheck(self._registry_tag(name, version))
            if early is not None:
                return early
        path = self._artifacts(name, version)
        sidecar = path / SIDECAR
        stored = sidecar.read_text().strip() if sidecar.exists() else None
        if stored is not None and _VERIFIED.get(key) == stored:
            return None
        if stored is None:  # cached before signatures were kept beside the artifacts: ask the registry
            stored = self._registry_tag(name, version)
            _write_sidecar(path, stored)
        why = refusal(path, name, stored)
        if why is not None:  # signed since it was cached (tp models sign)? the registry's tag, once more
            try:
                fresh = self._registry_tag(name, version)
            except ModelLoadError:  # refused on what is known
                fresh = stored
            if fresh != stored:
                _write_sidecar(path, fresh)
                stored, why = fresh, refusal(path, name, fresh)
            if why is not None and fresh and _REFETCHED.get(key) != fresh:
                # the cached copy itself may be stale (another registry's): fetched anew, once per (version, tag)
                _REFETCHED[key] = fresh
                shutil.rmtree(path, ignore_errors=True)
                path = self._artifacts(name, version)
                stored = (path / SIDECAR).read_text().strip()
                why = refusal(path, name, stored)
        if why is None:
            _VERIFIED[key] = stored
        return why

    def load(self, name: str, alias: str = "champion", version: str | None = None) -> LoadedModel:
        version = str(version) if version is not None else self.resolve(name, alias)
        key = (self._uri(), name, version)
        if key in _MEMORY:
            return _MEMORY[key]
        t = time.perf_counter()
        # checked over the bytes about to be read, in this process, before anything is deserialized (and, for a
        # tag that cannot verify, before anything is downloaded)
        _VERIFIED.pop(key, None)
        why = self.refusal(name, version)
        if why is not None:
            log.error("refused to load %s version %s: %s", name, version, why)
            raise ModelRefused(name, version, why)
        path = self._artifacts(name, version)
        try:
            loaded = _load_native(name, version, path, resolve_device(self.device))
        except Exception as e:  # noqa: BLE001
            raise ModelLoadError(f"cannot load model {name} version {version} from {path}: {e}") from None
        _MEMORY[key] = loaded
        log.info("loaded %s version %s (%s) in %.0f ms", name, version, loaded.flavor, (time.perf_counter() - t) * 1e3)
        return loaded

    def predict(self, name: str, X, alias: str = "champion"):
        return self.load(name, alias).predict(X)


def _write_sidecar(path: Path, signature: str) -> None:
    from ..models.signing import SIDECAR

    tmp = path / f"{SIDECAR}.{os.getpid()}"
    tmp.write_text(signature or "")
    tmp.replace(path / SIDECAR)


def _read_memo(path: Path) -> dict:
    """alias -> {"version", "at"} (older caches stored alias -> version: treated as stale)."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {a: (v if isinstance(v, dict) else {"version": str(v), "at": -1.0}) for a, v in raw.items()}


def _load_native(name: str, version: str, path: Path, device: str) -> LoadedModel:
    import yaml

    meta = yaml.safe_load((path / "MLmodel").read_text())
    flavors = meta.get("flavors", {})
    calibration = (meta.get("metadata") or {}).get("tp_calibration")
    if "xgboost" in flavors:
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(str(path / flavors["xgboost"]["data"]))
        booster.set_param({"device": device, "nthread": 2})
        return LoadedModel(name, version, "xgboost", booster, booster.feature_names, calibration)
    if "lightgbm" in flavors:
        import lightgbm as lgb

        booster = lgb.Booster(model_file=str(path / flavors["lightgbm"]["data"]))
        return LoadedModel(name, version, "lightgbm", booster, booster.feature_name(), calibration)
    artifacts = (flavors.get("python_function") or {}).get("artifacts") or {}
    if "nhits" in artifacts:  # the NHITS forecaster (a saved directory)
        from ..models.forecast.nhits import Forecaster

        forecaster = Forecaster.load(path / artifacts["nhits"]["path"], device=device)
        forecaster.version = version
        return LoadedModel(name, version, "nhits", forecaster, None)
    if "tcn" in artifacts:  # the TCN pattern detector (state dict + config)
        from ..models.patterns import tcn

        return LoadedModel(name, version, "tcn", tcn.load(path / artifacts["tcn"]["path"], device=device), None)
    pickled = (artifacts.get("regime_model") or {}).get("path")  # the regime model (pyfunc around a pickle)
    if pickled is None and "sklearn" in flavors:  # versions logged before the pyfunc wrapper
        pickled = flavors["sklearn"]["pickled_model"]
    if pickled is not None:
        import cloudpickle

        with open(path / pickled, "rb") as f:
            model = cloudpickle.load(f)
        return LoadedModel(name, version, "regime", model, getattr(model, "feature_names", None))
    raise ModelLoadError(f"model {name} version {version}: no supported flavor in {sorted(flavors)}")
