"""The MLflow model registry: versions, aliases, gate tags, listing and manual promotion."""

from __future__ import annotations

import math

from .gate import GateDecision

CHAMPION, CHALLENGER = "champion", "challenger"


def registered_name(family: str, symbol: str | None = None) -> str:
    """One registered model per family, and per symbol where the model is per symbol."""
    if symbol is None:
        return family
    safe = "".join(ch if ch.isalnum() else "_" for ch in symbol).strip("_")
    return f"{family}.{safe}"


def champion_version(client, name: str):
    """The version holding the champion alias, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def apply_decision(client, name: str, version: str, decision: GateDecision) -> None:
    for k, v in decision.tags().items():
        client.set_model_version_tag(name, str(version), k, v)
    client.set_registered_model_alias(name, decision.alias, str(version))


def promote(client, name: str, version: str) -> dict:
    """Move champion to NAME/VERSION by hand (recorded on the version)."""
    from mlflow.exceptions import MlflowException

    from ..errors import InvalidInput

    try:
        client.get_model_version(name, str(version))
    except MlflowException:
        raise InvalidInput(f"no registered model {name!r} version {version!r}", field="version") from None
    previous = champion_version(client, name)
    client.set_registered_model_alias(name, CHAMPION, str(version))
    client.set_model_version_tag(name, str(version), "gate.decision", "champion")
    client.set_model_version_tag(name, str(version), "gate.reason", "promoted by hand (tp models promote)")
    return {"model": name, "champion": str(version), "previous": str(previous.version) if previous else None}


def list_models(client) -> list[dict]:
    out = []
    for rm in client.search_registered_models():
        aliases_by_version: dict[str, list[str]] = {}
        for alias, v in (rm.aliases or {}).items():
            aliases_by_version.setdefault(str(v), []).append(alias)
        versions = []
        for mv in client.search_model_versions(f"name = '{rm.name}'"):
            metrics = {}
            if mv.run_id:
                try:
                    metrics = {k: v for k, v in client.get_run(mv.run_id).data.metrics.items()
                               if not (isinstance(v, float) and math.isnan(v))}
                except Exception:  # noqa: BLE001 - a deleted run leaves the version listed
                    metrics = {}
            versions.append({"version": str(mv.version), "aliases": sorted(aliases_by_version.get(str(mv.version), [])),
                             "run_id": mv.run_id, "metrics": metrics,
                             "gate": {k[5:]: v for k, v in (mv.tags or {}).items() if k.startswith("gate.")}})
        versions.sort(key=lambda v: int(v["version"]))
        out.append({"name": rm.name, "versions": versions})
    return sorted(out, key=lambda m: m["name"])
