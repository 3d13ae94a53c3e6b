"""Runs: asset backfills over a symbol's history (``tp backfill``) and the demo (``tp demo``)."""

from __future__ import annotations

from datetime import date, datetime, timezone

from ..errors import InvalidInput
from ._context import instance as _inst
from ._context import mlflow_client, store_or_open


def parse_date(value, field: str) -> date:
    """A day: ISO text (YYYY-MM-DD), a date, or a datetime (its UTC day); within the platform's years."""
    from ..core.timeframes import check_time_range

    if isinstance(value, datetime):
        day = (value.astimezone(timezone.utc) if value.tzinfo else value).date()
    elif isinstance(value, date):
        day = value
    else:
        try:
            if not isinstance(value, str):
                raise ValueError
            day = date.fromisoformat(value)
        except ValueError:
            raise InvalidInput(f"--{field} {value!r} is not a date (YYYY-MM-DD)", field=field) from None
    return check_time_range(day, field, f"--{field} {value!r}")


def backfill(symbol: str, start, end, *, assets="predictions,forecasts,patterns", store=None, instance=None,
             client=None) -> dict:
    """An asset backfill over ``symbol``'s months from ``start`` to ``end``: the model outputs with the model
    versions pinned, or the market data and features (``assets="market,features"``); the daemon runs it.
    The symbol, dates and assets are checked before Dagster or MLflow loads."""
    from ..backfill import OUTPUTS, create_backfill, validate

    names = tuple(dict.fromkeys(a.strip() for a in (assets.split(",") if isinstance(assets, str) else assets)
                                if a.strip()))  # market,market once: runs_at_most counted it twice
    start, end = parse_date(start, "from"), parse_date(end, "to")
    with store_or_open(store) as s:
        validate(s, symbol, start, end, names)
        if client is None and set(names) & set(OUTPUTS):  # the data needs no model registry
            client = mlflow_client()
        return create_backfill(_inst(instance), s, client, symbol, start, end, names)


def demo(*, quick: bool = False, seed: int = 7, control: bool = False, log=None, as_of=None) -> dict:
    """The sample market (``control``: its random-walk control) loaded and every asset materialized in one
    process: the summary (times, champions and the gate's figures, failures). ``as_of``: the day (a date) the
    demo is run as of, its candles ending at that midnight (UTC); default today."""
    from ..demo import run_demo

    import sys

    # progress goes to stderr (or ``log``): stdout may be a JSON channel (tp --json, an MCP server)
    return run_demo(quick=quick, seed=seed, log=log or (lambda m: print(m, file=sys.stderr)), control=control,
                    as_of=as_of)
