"""The model registry: versions and their gate figures, the champion history, a hand promotion, the
champion against its shadow (``tp models``)."""

from __future__ import annotations

from ..errors import InvalidInput
from ._context import mlflow_client, store_or_open


def list_models(*, client=None) -> list[dict]:
    """Registered models, their versions, aliases, gate decision and figures."""
    from ..models.registry import list_models as registered

    return registered(client or mlflow_client())


def promote(name: str, version: str, *, client=None, store=None) -> dict:
    """Move the champion alias to ``name`` ``version`` by hand (recorded in the champion history), with what
    the gate had said of it (skipped by this promotion)."""
    from ..models.registry import promote as move

    with store_or_open(store) as s:
        return move(client or mlflow_client(), name, str(version), conn=s.conn)


def sign(name: str, version: str, *, client=None) -> dict:
    """Sign ``name`` ``version`` with this platform's key: for a version you trust that was registered before
    signatures or by hand (the serving resource refuses unsigned versions)."""
    from ..models.registry import sign as sign_version

    return sign_version(client or mlflow_client(), name, str(version))


def history(name: str | None = None, *, store=None) -> list[dict]:
    """Who held champion and challenger when; one model or every one."""
    from ..store.champions import history as rows_of

    with store_or_open(store) as s:
        rows = rows_of(s.conn, name)
    if name and not rows:
        raise InvalidInput(f"no champion history for {name!r} (tp models list shows the registered names)",
                           field="name")
    return rows


def compare(name: str, *, margin: float = 0.005, client=None, store=None) -> dict:
    """The champion against its shadow (the challenger) on the outcomes realized since the shadow started."""
    from ..models.compare import compare_shadow
    from ..resources.serving import ModelServer

    with store_or_open(store) as s:
        return compare_shadow(s, client or mlflow_client(), ModelServer(), name, margin=margin)
