"""The MLflow model registry: names and lineages, versions, aliases, gate tags, paged
listings and manual promotion.

One registered model is one *lineage*: every version predicts the same target (the
label definition, recorded as the ``tp.target`` tag on the registered model and on
each version). A run whose target differs from its lineage's is refused before
anything is logged; a new target gets its own lineage name (config ``lineage``).
"""

from __future__ import annotations

import math
import re
from typing import Iterator

from ..errors import InvalidInput
from .gate import GateDecision

CHAMPION, CHALLENGER = "champion", "challenger"
_LINEAGE = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


class LineageError(InvalidInput):
    pass


def registered_name(family: str, symbol: str | None = None, lineage: str | None = None) -> str:
    """``family[.symbol][.lineage]``: one registered model per family, per symbol where the model is
    per symbol, and per target (a non-default ``lineage``)."""
    name = family
    if symbol is not None:
        name += "." + "".join(ch if ch.isalnum() else "_" for ch in symbol).strip("_")
    if lineage:
        if not _LINEAGE.match(lineage):
            raise InvalidInput(f"lineage {lineage!r}: use 1-40 letters, digits, '_' or '-'", field="lineage")
        name += f".{lineage}"
    return name


def iter_registered_models(client, filter_string: str | None = None) -> Iterator:
    """Every registered model, page by page (MLflow returns 100 per call by default)."""
    token = None
    while True:
        page = client.search_registered_models(filter_string=filter_string, max_results=200, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def iter_model_versions(client, name: str) -> Iterator:
    token = None
    escaped = name.replace("'", "\\'")
    while True:
        page = client.search_model_versions(f"name = '{escaped}'", max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def version_by_alias(client, name: str, alias: str):
    """The version holding ``alias``, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def champion_version(client, name: str):
    return version_by_alias(client, name, CHAMPION)


def check_target(client, name: str, target: str) -> None:
    """Refuse (before anything is logged) a run whose target differs from its lineage's."""
    from mlflow.exceptions import MlflowException

    try:
        rm = client.get_registered_model(name)
    except MlflowException:
        return  # a new lineage
    have = (rm.tags or {}).get("tp.target")
    if have is None:  # registered before targets were recorded: judge by the champion's tag, if any
        champ = champion_version(client, name)
        have = (champ.tags or {}).get("tp.target") if champ is not None else None
    if have is not None and have != target:
        raise LineageError(
            f"registered model {name!r} holds versions of another target ({have!r}); this run's target is "
            f"{target!r}. A registered model holds one target, so the gate never compares versions trained for "
            "different labels: set `lineage` in the run config to start a new lineage under its own name",
            field="lineage")


def apply_decision(client, name: str, version: str, decision: GateDecision, conn=None) -> None:
    """Tag the version with the gate's decision and move the alias it chose (recorded in the champion
    history when ``conn``, a market-store connection, is given)."""
    for k, v in decision.tags().items():
        client.set_model_version_tag(name, str(version), k, v)
    if decision.alias not in (CHAMPION, CHALLENGER):  # blocked: registered, no alias moves
        return
    client.set_registered_model_alias(name, decision.alias, str(version))
    if conn is not None:
        from ..store.champions import record_move

        record_move(conn, name, decision.alias, str(version), "gate", note=decision.reason[:500])


def _version(client, name: str, version: str):
    """The registered version, or an error naming it when it does not exist (a registry that fails to answer
    raises as it does)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException as e:
        if getattr(e, "error_code", None) not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise  # the registry failed to answer: not a missing version
        raise InvalidInput(f"no registered model {name!r} version {version!r}", field="version") from None


def _server(client, server=None):
    if server is not None:
        return server
    from ..resources.serving import ModelServer

    return ModelServer(tracking_uri=client.tracking_uri)


def promote(client, name: str, version: str, conn=None, server=None) -> dict:
    """Move champion to NAME/VERSION by hand (recorded on the version, and in the champion history when
    ``conn``, a market-store connection, is given). A version the serving resource would refuse (unsigned, or
    its signature wrong) is not promoted: the error says why."""
    mv = _version(client, name, version)
    why = _server(client, server).refusal(name, str(version))
    if why is not None:
        raise InvalidInput(f"{name} version {version} cannot serve: {why}; the champion stays where it is "
                           f"(`tp models sign {name} {version}` vouches for a version you trust)", field="version")
    previous = champion_version(client, name)
    skipped = (mv.tags or {}).get("gate.reason", "")
    client.set_registered_model_alias(name, CHAMPION, str(version))
    client.set_model_version_tag(name, str(version), "gate.decision", "champion")
    client.set_model_version_tag(name, str(version), "gate.reason", "promoted by hand (tp models promote)")
    if conn is not None:
        from ..store.champions import record_move

        record_move(conn, name, CHAMPION, str(version), "promote", note="tp models promote")
    return {"model": name, "champion": str(version), "previous": str(previous.version) if previous else None,
            "skipped_gate": skipped}


def sign(client, name: str, version: str) -> dict:
    """Sign ``name`` ``version`` with this platform's key (``tp models sign``): what a user does for a version
    they trust that was registered before signatures, or by hand. The signature is over the artifacts as they
    are now."""
    import tempfile
    from pathlib import Path

    from . import signing
    from .tracking import sign_version

    before = (_version(client, name, version).tags or {}).get(signing.TAG)
    with tempfile.TemporaryDirectory() as tmp:
        signature = sign_version(client, name, str(version), Path(tmp) / "a")
    client.set_model_version_tag(name, str(version), signing.TAG, signature)
    return {"model": name, "version": str(version), "was_signed": bool(before), "key_id": signature.split(":")[1]}


def list_models(client, server=None) -> list[dict]:
    """Every registered model and version. ``serve`` says whether the serving resource would load a version:
    checked (its artifacts against its signature, nothing loaded) for the versions an alias points at, else
    only whether it is signed."""
    from ..resources.serving import ModelLoadError
    from . import signing

    server = _server(client, server)
    out = []
    for rm in iter_registered_models(client):
        aliases_by_version: dict[str, list[str]] = {}
        for alias, v in (rm.aliases or {}).items():
            aliases_by_version.setdefault(str(v), []).append(alias)
        versions = []
        for mv in iter_model_versions(client, rm.name):
            metrics = {}
            if mv.run_id:
                try:
                    metrics = {k: v for k, v in client.get_run(mv.run_id).data.metrics.items()
                               if not (isinstance(v, float) and math.isnan(v))}
                except Exception:  # noqa: BLE001 - a deleted run leaves the version listed
                    metrics = {}
            tags = mv.tags or {}
            aliased = sorted(aliases_by_version.get(str(mv.version), []))
            if aliased:
                try:
                    why = server.refusal(rm.name, str(mv.version))
                    serve = "refused: " + why if why else "verified"
                except ModelLoadError as e:  # its artifacts cannot be fetched now
                    serve = f"not checked: {e}"
            else:
                serve = "signed (not checked)" if tags.get(signing.TAG) else "refused: not signed"
            versions.append({"version": str(mv.version), "aliases": aliased, "serve": serve,
                             "run_id": mv.run_id, "metrics": metrics,
                             "target": tags.get("tp.target"),
                             "training_window": [tags.get("tp.train_start"), tags.get("tp.train_data_end")],
                             "gate": {k[5:]: v for k, v in tags.items() if k.startswith("gate.")}})
        versions.sort(key=lambda v: int(v["version"]))
        out.append({"name": rm.name, "target": (rm.tags or {}).get("tp.target"), "versions": versions})
    return sorted(out, key=lambda m: m["name"])
