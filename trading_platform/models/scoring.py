"""Scoring any stretch of time with pinned model versions: what the partitioned prediction
assets (schedules, backfills) and the live path share, so that a row is the same whichever
of them computed it.

A *version* is one registered model version with its role (``champion``: what downstream
consumers read; ``shadow``: a challenger scored beside it, never used downstream) and its
tags. ``score_range`` scores one symbol and timeframe over ``start <= ts < end`` and returns
the rows of the version's table:

- classifiers and regimes -> ``predictions`` (one row per feature row);
- NHITS -> ``forecasts`` (a forecast at every candle as origin, ``horizon`` steps each);
- the TCN -> ``patterns`` (every window ending at a candle, patterns above the threshold).

A row's value depends only on the data up to its time and on a fixed context before
``start`` (the regime filter runs over ``context_rows`` rows before the stretch), never on
where a run's stretch begins beyond that, so scoring a month at once, in chunks, or one
new candle at a time gives the same rows. Every row says whether its time lies inside the
version's own training window (``in_sample``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np

CLASSIFIERS = ("pump_xgb", "regime_hmm", "signal_lgbm")
TABLES = {"predictions": CLASSIFIERS, "forecasts": ("nhits",), "patterns": ("pattern_tcn",)}
FAMILY_TABLE = {f: t for t, fams in TABLES.items() for f in fams}
ROLES = {"champion": "champion", "challenger": "shadow"}
US = 1_000_000


@dataclass
class Version:
    name: str
    version: str
    role: str                       # champion | shadow
    tags: dict = field(default_factory=dict)

    @property
    def family(self) -> str:
        return self.tags.get("tp.family", "")

    @property
    def table(self) -> str:
        return FAMILY_TABLE.get(self.family, "")

    def timeframes(self, info) -> list[str]:
        """The symbol's timeframes this version scores (none if it is another symbol's model)."""
        only = self.tags.get("tp.symbol")
        if only and only != info.symbol:
            return []
        tf = self.tags.get("tp.timeframe")
        if tf == "any":  # the pattern detector reads every listed timeframe
            return list(info.timeframes)
        return [tf] if tf in info.timeframes else []

    def in_sample(self, ts_us: np.ndarray) -> np.ndarray:
        """Whether each time lies inside the version's own training window."""
        start, end = _us(self.tags.get("tp.train_start")), _us(self.tags.get("tp.train_data_end"))
        ts_us = np.asarray(ts_us, dtype=np.int64)
        if end is None:
            return np.zeros(len(ts_us), bool)
        return (ts_us >= (start if start is not None else np.iinfo(np.int64).min)) & (ts_us <= end)


def _us(value: str | None) -> int | None:
    return int(np.datetime64(value.rstrip("Z"), "us").astype("int64")) if value else None


def resolve_versions(client, families: tuple[str, ...] = tuple(FAMILY_TABLE), log=None) -> list[Version]:
    """Each registered champion and challenger of the given families, now (paging through the registry)."""
    from .registry import iter_registered_models

    out = []
    for rm in iter_registered_models(client):
        aliases = rm.aliases or {}
        for alias, role in ROLES.items():
            if alias not in aliases or (role == "shadow" and aliases.get("champion") == aliases[alias]):
                continue
            version = str(aliases[alias])
            tags = client.get_model_version(rm.name, version).tags or {}
            if not tags.get("tp.family") or not tags.get("tp.timeframe"):
                if log is not None:
                    log.warning("%s version %s has no tp.family/tp.timeframe tags: skipped", rm.name, version)
                continue
            if tags["tp.family"] in families:
                out.append(Version(rm.name, version, role, dict(tags)))
    return out


def pins(versions: list[Version]) -> dict:
    """The versions as run configuration: {name: {role: version}} (what a run or a backfill pins)."""
    out: dict = {}
    for v in versions:
        out.setdefault(v.name, {})[v.role] = v.version
    return out


def from_pins(client, pinned: dict) -> list[Version]:
    """The pinned versions with their tags (a retry, or a backfill's later chunk, uses exactly these)."""
    return [Version(name, str(version), role, dict(client.get_model_version(name, str(version)).tags or {}))
            for name, roles in sorted(pinned.items()) for role, version in sorted(roles.items())]


def pinned_for(store, client, key: str, families: tuple[str, ...], log=None) -> list[Version]:
    """One pin per ``key`` (a backfill id): the first run resolves the champions and challengers and
    records them; every later run with the same key reads them back, whatever moved since."""
    with store.conn.transaction():
        store.conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"pins:{key}",))
        rows = store.conn.execute("SELECT model_name, role, model_version FROM prediction_pins WHERE pin_key = %s",
                                  (key,)).fetchall()
        if not rows:
            chosen = resolve_versions(client, tuple(FAMILY_TABLE), log)
            for v in chosen:
                store.conn.execute("INSERT INTO prediction_pins (pin_key, model_name, role, model_version) "
                                   "VALUES (%s, %s, %s, %s)", (key, v.name, v.role, v.version))
            rows = [(v.name, v.role, v.version) for v in chosen]
    pinned: dict = {}
    for name, role, version in rows:
        pinned.setdefault(name, {})[role] = version
    return [v for v in from_pins(client, pinned) if v.family in families]


# ---- scoring -----------------------------------------------------------------------------------
@dataclass
class Params:
    context_rows: int = 2000      # rows before the stretch the regime filter runs over
    pattern_threshold: float = 0.5
    pattern_windows: tuple = (64, 128, 256)


def score_range(store, server, v: Version, info, timeframe: str, start: datetime, end: datetime | None,
                params: Params | None = None, after: datetime | None = None) -> list[tuple]:
    """The rows of ``v``'s table for ``info``'s ``timeframe`` over ``start <= ts < end`` (``after``: only
    rows later than it; what is already stored need not be scored again)."""
    params = params or Params()
    model = server.load(v.name, version=v.version)
    start, end, after = (None if t is None else t.astimezone(timezone.utc) for t in (start, end, after))
    lo = max(start, after + timedelta(microseconds=1)) if after else start
    if v.table == "predictions":
        return _predictions(store, server, v, model, info, timeframe, start, lo, end, params)
    if v.table == "forecasts":
        return _forecasts(store, v, model.model, info, timeframe, lo, end)
    if v.table == "patterns":
        return _patterns(store, v, model.model, info, timeframe, lo, end, params)
    raise ValueError(f"{v.name} version {v.version}: unknown family {v.family!r}")


def _features(store, symbol: str, tf: str, start: datetime, end: datetime | None, before: int):
    """Stored features for [start, end) plus ``before`` rows before ``start``."""
    import polars as pl

    from ..features.storage import read_features

    head = read_features(store.conn, symbol, tf, end=start, last=before) if before else None
    body = read_features(store.conn, symbol, tf, start, end)
    return body if head is None or not len(head) else pl.concat([head, body], how="diagonal_relaxed")


def _predictions(store, server, v, model, info, tf, start, lo, end, params) -> list[tuple]:
    from .predict import regime_input, score_frame
    from .regime import INPUTS

    context = params.context_rows if v.family in ("regime_hmm", "signal_lgbm") else 0
    f = _features(store, info.symbol, tf, start, end, context)
    if v.family == "regime_hmm":
        f = f.drop_nulls(list(INPUTS))
    if not len(f):
        return []
    out = score_frame(server, v.family, model, v.tags, f)
    keep = (f["ts"] >= lo).to_numpy()
    ts = f["ts"].to_list()
    inputs = {v.name: v.version}
    src = regime_input(server, v.tags) if v.family == "signal_lgbm" else None
    if src:
        inputs[src[0]] = src[1]
    ins = v.in_sample(f["ts"].dt.epoch("us").to_numpy())
    return [(v.name, v.version, info.symbol, tf, ts[i], val, lab,
             {**d, "role": v.role, "inputs": inputs}, v.role, bool(ins[i]))
            for i, (val, lab, d) in enumerate(out) if keep[i]]


def _forecasts(store, v, forecaster, info, tf, lo, end) -> list[tuple]:
    return forecast_many(store, v, forecaster, [(info, tf, lo, end)])


def forecast_many(store, v, forecaster, items: list[tuple]) -> list[tuple]:
    """``v``'s forecast rows over ``lo <= origin < end`` for each ``(info, timeframe, lo, end)`` of ``items``, in
    one batched call of the model (a live batch's symbols together: one model call instead of one per symbol)."""
    import polars as pl

    frames, origins = [], {}
    cols = ["symbol", "ts", "close", *forecaster.cfg.hist_exog]
    for info, tf, lo, end in items:
        f = _features(store, info.symbol, tf, lo, end, forecaster.rows_needed)
        o = f.filter(pl.col("ts") >= lo)["ts"]
        if len(o):
            frames.append(f.select(cols))
            origins[info.symbol] = o.to_list()
    if not origins:
        return []
    out = forecaster.forecast(pl.concat(frames, how="vertical_relaxed").to_pandas(), origins=origins)
    ts = np.array([int(r["origin_ts"].timestamp() * US) for r in out.rows], dtype=np.int64)
    ins = v.in_sample(ts)
    return [(v.name, v.version, r["symbol"], r["timeframe"], r["origin_ts"], r["step"], r["median"],
             json.dumps(r["quantiles"]), v.role, bool(ins[i])) for i, r in enumerate(out.rows)]


def _patterns(store, v, detector, info, tf, lo, end, params) -> list[tuple]:
    from ..features.pipeline import to_polars
    from .patterns.scan import scan

    head = store.read_candles_tail(info.symbol, tf, lo - timedelta(microseconds=1), max(params.pattern_windows))
    body = store.read_candles(info.symbol, tf, lo, end)
    if len(body) == 0:
        return []
    frame = to_polars(head, info.symbol, tf).vstack(to_polars(body, info.symbol, tf)).to_pandas()
    found = scan(frame, detector, windows=params.pattern_windows, stride=1, threshold=params.pattern_threshold,
                 since=lo - timedelta(microseconds=1))
    if not len(found):
        return []
    ts = np.array([int(t.timestamp() * US) for t in found["ts"]], dtype=np.int64)
    ins = v.in_sample(ts)
    return [(v.name, v.version, info.symbol, tf, r.ts.to_pydatetime(), r.pattern, float(r.probability), int(r.bars),
             v.role, bool(ins[i])) for i, r in enumerate(found.itertuples())]


COLUMNS = {
    "predictions": ["model_name", "model_version", "symbol", "timeframe", "ts", "value", "label", "details", "role",
                    "in_sample"],
    "forecasts": ["model_name", "model_version", "symbol", "timeframe", "origin_ts", "step", "median", "quantiles",
                  "role", "in_sample"],
    "patterns": ["model_name", "model_version", "symbol", "timeframe", "ts", "pattern", "probability", "bars", "role",
                 "in_sample"],
}
KEYS = {"predictions": 5, "forecasts": 6, "patterns": 6}
TIME_COLUMN = {"predictions": "ts", "forecasts": "origin_ts", "patterns": "ts"}


def write_rows(conn, table: str, rows: list[tuple]) -> int:
    """Upsert ``score_range`` rows into their table (keyed: a re-run replaces, never duplicates)."""
    from ..store.predictions import upsert

    if table == "predictions":
        rows = [(*r[:7], json.dumps(r[7]), *r[8:]) for r in rows]
    return upsert(conn, table, COLUMNS[table], COLUMNS[table][:KEYS[table]], rows)


def latest_stored(conn, table: str, v: Version, symbol: str, tf: str, start: datetime, end: datetime | None):
    """The newest row time stored for ``v`` *in its current role* for the symbol and timeframe in
    [start, end), or None (a promoted shadow's rows are scored again, as the champion's)."""
    col = TIME_COLUMN[table]
    return conn.execute(
        f"SELECT max({col}) FROM {table} WHERE model_name = %s AND model_version = %s AND role = %s "
        f"AND symbol = %s AND timeframe = %s AND {col} >= %s AND (%s::timestamptz IS NULL OR {col} < %s)",
        (v.name, v.version, v.role, symbol, tf, start, end, end)).fetchone()[0]


def utc(ts_us: int) -> datetime:
    return datetime.fromtimestamp(int(ts_us) / US, tz=timezone.utc)
