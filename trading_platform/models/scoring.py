"""Scoring any stretch of time with pinned model versions: what the partitioned prediction
assets (schedules, backfills) and the live path share, so that a row is the same whichever
of them computed it.

A *version* is one registered model version with the alias it was pinned under (``champion``, or
``shadow`` for a challenger scored beside it) and its tags. Rows carry no role: which version was
champion when is the champion history's to say (``store/champions.py``). ``score_range`` scores one
symbol and timeframe over ``start <= ts < end`` and returns the rows of the version's table:

- classifiers and regimes -> ``predictions`` (one row per feature row);
- NHITS -> ``forecasts`` (a forecast at every candle as origin, ``horizon`` steps each);
- the TCN -> ``patterns`` (every window ending at a candle, patterns above the threshold).

A row's value depends only on the data up to its time and on a fixed context before
``start`` (the regime filter runs over ``context_rows`` rows before the stretch), never on
where a run's stretch begins beyond that, so scoring a month at once, in chunks, or one
new candle at a time gives the same rows. Every row says whether its time lies inside the
version's own training window (``in_sample``).

Rows are written through ``store.outputs.OutputWriter`` (append-only: an equal value writes nothing, a
changed one supersedes). ``fill_gaps`` scores the candles a version has no current output for (interior
gaps too); ``correct`` rescores what a revised candle changed: from its time over the longest window the
version reads (``correction_span``).
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np

CLASSIFIERS = ("pump_xgb", "regime_hmm", "signal_lgbm")
TABLES = {"predictions": CLASSIFIERS, "forecasts": ("nhits",), "patterns": ("pattern_tcn",)}
FAMILY_TABLE = {f: t for t, fams in TABLES.items() for f in fams}
ROLES = {"champion": "champion", "challenger": "shadow"}
US = 1_000_000
_LOG = logging.getLogger(__name__)


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


def resolve_versions(client, families: tuple[str, ...] = tuple(FAMILY_TABLE), log=None, conn=None,
                     server=None) -> list[Version]:
    """Each registered champion and challenger of the given families, now (paging through the registry), that
    this platform may serve. With ``conn`` (a market-store connection), alias moves made outside the platform
    are recorded in the champion history on the way (``store.champions.sync_from_registry``).

    Every aliased version's signature is checked first (``ModelServer.refusal``; nothing is deserialized). A
    refused champion keeps its predecessor serving: the newest version of the champion history that verifies
    (with ``conn``; without, the model has no champion); a refused challenger has no shadow. The champion
    history records what is served, not the refused move, and with ``conn`` the refusals are recorded
    (``store.refusals``: the watchdog's ``model_refused``, ``tp models list``)."""
    from .registry import iter_registered_models

    if server is None:
        from ..resources.serving import ModelServer

        server = ModelServer(tracking_uri=client.tracking_uri)
    registered = list(iter_registered_models(client))
    served: dict[str, dict[str, str]] = {}
    chosen: list[Version] = []
    refused: list[tuple[str, str, str, str]] = []
    for rm in registered:
        served[rm.name] = aliases = {a: str(v) for a, v in (rm.aliases or {}).items()}
        for alias, role in ROLES.items():
            if alias not in aliases or (role == "shadow" and aliases.get("champion") == aliases[alias]):
                continue
            version = aliases[alias]
            tags = client.get_model_version(rm.name, version).tags or {}
            if not tags.get("tp.family") or not tags.get("tp.timeframe"):
                if log is not None:
                    log.warning("%s version %s has no tp.family/tp.timeframe tags: skipped", rm.name, version)
                continue
            # with conn, every family: the champion history must never record a refused move
            if tags["tp.family"] not in families and conn is None:
                continue
            why = server.refusal(rm.name, version)
            if why is not None:
                refused.append((rm.name, version, alias, why))
                keep = _servable_predecessor(conn, server, rm.name, version) if alias == "champion" else None
                (log.error if log is not None else _LOG.error)(
                    "%s version %s (%s) refused: %s; %s", rm.name, version, alias, why,
                    f"version {keep} keeps serving" if keep else "nothing served in its place")
                if keep is None:
                    aliases.pop(alias)
                    continue
                aliases[alias] = version = keep
                tags = client.get_model_version(rm.name, version).tags or {}
            if tags.get("tp.family") in families:
                chosen.append(Version(rm.name, version, role, dict(tags)))
    if conn is not None:
        from ..store import refusals
        from ..store.champions import sync_from_registry

        for m in sync_from_registry(conn, client, registered, served=served):
            if log is not None:
                log.info("champion history: %s %s %s -> %s", m["model"], m["alias"], m["from"], m["to"])
        refusals.record(conn, refused)
        refusals.clear(conn, refused)  # with conn every aliased version was looked at: the list is complete
    # a challenger that became the kept champion is not its own shadow
    champions = {(v.name, v.version) for v in chosen if v.role == "champion"}
    return [v for v in chosen if v.role == "champion" or (v.name, v.version) not in champions]


def _servable_predecessor(conn, server, name: str, refused: str) -> str | None:
    """The newest version that held champion (the champion history) other than ``refused`` and that verifies."""
    if conn is None:
        return None
    rows = conn.execute("SELECT version FROM model_champions WHERE model_name = %s AND alias = 'champion' "
                        "AND version <> %s ORDER BY valid_to DESC NULLS FIRST, valid_from DESC", (name, refused))
    seen = []
    for (version,) in rows.fetchall():
        if version in seen:
            continue
        seen.append(version)
        if server.refusal(name, version) is None:
            return version
    return None


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
            chosen = resolve_versions(client, tuple(FAMILY_TABLE), log, conn=store.conn)
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

    def __post_init__(self):
        """Checked before anything is read or written (a NaN threshold superseded every pattern row by none, a
        negative one wrote every pattern); InvalidInput names the ``PredictionsConfig`` field."""
        from ..errors import InvalidInput
        from .common import check_int, check_number

        check_int("predictions", "context_rows", self.context_rows, 0)
        # a probability: 0 writes every pattern of every window (what a test of the scan wants), above 1 none
        check_number("predictions", "pattern_threshold", self.pattern_threshold, 0, 1)
        windows = self.pattern_windows
        if isinstance(windows, (str, bytes)) or not isinstance(windows, (tuple, list)) or not windows:
            raise InvalidInput(f"predictions pattern_windows: {windows!r} must list window lengths",
                               field="pattern_windows")
        for w in windows:
            check_int("predictions", "pattern_windows", w, 16)  # the scan's shortest window
        self.pattern_windows = tuple(int(w) for w in windows)


def score_range(store, server, v: Version, info, timeframe: str, start: datetime, end: datetime | None,
                params: Params | None = None, seen: dict | None = None) -> list[tuple]:
    """The rows of ``v``'s table for ``info``'s ``timeframe`` over ``start <= ts < end``. ``seen["last"]``
    receives the time of the last candle the stretch read (what a recomputation of ``[start, end)`` covered
    when ``end`` is None: candles written later were not read)."""
    params = params or Params()
    seen = {} if seen is None else seen
    model = server.load(v.name, version=v.version)
    start, end = (None if t is None else t.astimezone(timezone.utc) for t in (start, end))
    if v.table == "predictions":
        return _predictions(store, server, v, model, info, timeframe, start, end, params, seen)
    if v.table == "forecasts":
        return forecast_many(store, v, model.model, [(info, timeframe, start, end)], seen)
    if v.table == "patterns":
        return _patterns(store, v, model.model, info, timeframe, start, end, params, seen)
    raise ValueError(f"{v.name} version {v.version}: unknown family {v.family!r}")


def _features(store, symbol: str, tf: str, start: datetime, end: datetime | None, before: int):
    """Stored features for [start, end) plus ``before`` rows before ``start``."""
    import polars as pl

    from ..features.storage import read_features

    head = read_features(store.conn, symbol, tf, end=start, last=before) if before else None
    body = read_features(store.conn, symbol, tf, start, end)
    return body if head is None or not len(head) else pl.concat([head, body], how="diagonal_relaxed")


def _predictions(store, server, v, model, info, tf, start, end, params, seen) -> list[tuple]:
    from .predict import regime_input, score_frame
    from .regime import INPUTS

    context = params.context_rows if v.family in ("regime_hmm", "signal_lgbm") else 0
    f = _features(store, info.symbol, tf, start, end, context)
    if len(f):
        seen["last"] = f["ts"][-1]
    if v.family == "regime_hmm":
        f = f.drop_nulls(list(INPUTS))
    if not len(f):
        return []
    out = score_frame(server, v.family, model, v.tags, f)
    keep = (f["ts"] >= start).to_numpy()
    ts = f["ts"].to_list()
    inputs = {v.name: v.version}
    src = regime_input(server, v.tags) if v.family == "signal_lgbm" else None
    if src:
        inputs[src[0]] = src[1]
    ins = v.in_sample(f["ts"].dt.epoch("us").to_numpy())
    return [(v.name, v.version, info.symbol, tf, ts[i], val, lab, json.dumps({**d, "inputs": inputs}), bool(ins[i]))
            for i, (val, lab, d) in enumerate(out) if keep[i]]


def forecast_many(store, v, forecaster, items: list[tuple], seen: dict | None = None) -> list[tuple]:
    """``v``'s forecast rows over ``lo <= origin < end`` for each ``(info, timeframe, lo, end)`` of ``items`` (``end``
    None: to the newest candle), in one batched call of the model (a live batch's symbols together: one model call
    instead of one per symbol). Items of one series are read as one stretch, from the earliest ``lo``."""
    import polars as pl

    series: dict[tuple, list] = {}
    for info, tf, lo, end in items:
        got = series.setdefault((info.symbol, tf), [info, lo, end])
        got[1] = min(got[1], lo)
        got[2] = None if (got[2] is None or end is None) else max(got[2], end)
    frames, origins = [], {}
    cols = ["symbol", "ts", "close", *forecaster.cfg.hist_exog]
    for (symbol, tf), (info, lo, end) in series.items():
        f = _features(store, symbol, tf, lo, end, forecaster.rows_needed)
        o = f.filter(pl.col("ts") >= lo)["ts"]
        if len(o):
            frames.append(f.select(cols))
            origins[symbol] = o.to_list()
            if seen is not None:
                seen["last"] = max(seen.get("last", o[-1]), o[-1])
    if not origins:
        return []
    out = forecaster.forecast(pl.concat(frames, how="vertical_relaxed").to_pandas(), origins=origins)
    ts = np.array([int(r["origin_ts"].timestamp() * US) for r in out.rows], dtype=np.int64)
    ins = v.in_sample(ts)
    return [(v.name, v.version, r["symbol"], r["timeframe"], r["origin_ts"], r["step"], r["median"],
             json.dumps(r["quantiles"]), bool(ins[i])) for i, r in enumerate(out.rows)]


def _patterns(store, v, detector, info, tf, lo, end, params, seen) -> list[tuple]:
    from ..features.pipeline import to_polars
    from .patterns.scan import scan

    head = store.read_candles_tail(info.symbol, tf, lo - timedelta(microseconds=1), max(params.pattern_windows))
    body = store.read_candles(info.symbol, tf, lo, end)
    if len(body) == 0:
        return []
    seen["last"] = datetime.fromtimestamp(int(body.ts_us[-1]) / US, tz=timezone.utc)
    frame = to_polars(head, info.symbol, tf).vstack(to_polars(body, info.symbol, tf)).to_pandas()
    found = scan(frame, detector, windows=params.pattern_windows, stride=1, threshold=params.pattern_threshold,
                 since=lo - timedelta(microseconds=1))
    if not len(found):
        return []
    ts = np.array([int(t.timestamp() * US) for t in found["ts"]], dtype=np.int64)
    ins = v.in_sample(ts)
    return [(v.name, v.version, info.symbol, tf, r.ts.to_pydatetime(), r.pattern, float(r.probability), int(r.bars),
             bool(ins[i])) for i, r in enumerate(found.itertuples())]


# ---- gaps ----------------------------------------------------------------------------------------
def fill_gaps(store, server, v: Version, info, tf: str, start: datetime, end: datetime | None, params: Params,
              writer, live_from: datetime | None = None) -> int:
    """Score every closed candle of ``[start, end)`` that ``v`` has no current output for (interior gaps too),
    one stretch of consecutive missing candles at a time; returns the rows staged in ``writer``. From
    ``live_from`` on, candles whose live event is pending are left to the live path."""
    from ..store.outputs import missing_runs

    from .regime import INPUTS

    staged = 0
    inputs = tuple(INPUTS) if v.family == "regime_hmm" else ()  # a candle without them gets no row: not a gap
    for lo, last in missing_runs(store.conn, v.table, v.name, v.version, info.symbol, tf, start, end, live_from,
                                 inputs):
        hi = last + timedelta(microseconds=1)
        rows = score_range(store, server, v, info, tf, lo, hi, params)
        writer.add(v.table, rows, scope=(v.name, v.version, info.symbol, tf, lo, hi), new=True)
        staged += len(rows)
    return staged


# ---- corrections ---------------------------------------------------------------------------------
CUMULATIVE = re.compile(r"^(obv|ath|ath_\w+|bars_since_ath)$")


def input_window(column: str, tol: float = 1e-6) -> int:
    """Rows of one feature column's look-back that can move its value by more than ``tol`` (relative): its
    window for a windowed feature; for a recursive one (EMA, Wilder's RSI and ATR, MACD) the rows until an old
    input's weight falls below ``tol``."""
    from .common import longest_feature_window

    def decay(alpha: float) -> int:
        return math.ceil(math.log(tol) / math.log(1 - alpha)) + 1

    if m := re.match(r"^(?:dist_)?ema_(\d+)$", column):
        return decay(2 / (int(m[1]) + 1))
    if m := re.match(r"^(?:rsi|atr)_(\d+)$", column):
        return decay(1 / int(m[1]))
    if m := re.match(r"^macd\w*?_(\d+)_(\d+)_(\d+)$", column):
        return decay(2 / (int(m[2]) + 1)) + decay(2 / (int(m[3]) + 1))
    return longest_feature_window([column])


def version_reads(v: Version, model, params: Params) -> tuple[int, int, bool, bool]:
    """(rows of its own timeframe, bars of the next higher timeframe, whether it reads a cumulative feature of
    its own timeframe, and of the higher one): how far back the version's input for one row reaches."""
    from .regime import INPUTS

    if v.family == "pattern_tcn":
        return max(params.pattern_windows), 0, False, False
    if v.family == "nhits":
        cols = list(model.model.cfg.hist_exog)
        base = int(model.model.rows_needed)
    elif v.family == "regime_hmm":
        cols, base = list(INPUTS), params.context_rows
    else:
        cols = list(getattr(model, "feature_names", None) or [])
        base = params.context_rows if v.family == "signal_lgbm" else 1
    own = [c for c in cols if not c.startswith("htf_")]
    htf = [c[4:] for c in cols if c.startswith("htf_")]
    own_w = max((input_window(c) for c in own), default=1)
    # NHITS reads rows_needed rows, each carrying its exogenous features' own look-back
    rows = base + own_w - 1 if v.family == "nhits" else max(base, own_w)
    return (rows, max((input_window(c) for c in htf), default=0),
            any(CUMULATIVE.match(c) for c in own), any(CUMULATIVE.match(c) for c in htf))


def correction_span(store, v: Version, model, info, tf: str, revised_tf: str, first: datetime, last: datetime,
                    params: Params) -> tuple[datetime, datetime | None] | None:
    """The stretch ``[lo, hi)`` of ``tf`` whose outputs of ``v`` a revision of ``revised_tf`` from ``first`` to
    ``last`` may change (``hi`` None: to the end of history), or None when none can. Own timeframe: the revised
    candles and the rows after the last one that read it. The next higher timeframe (``htf_*`` columns): the
    rows that see a revised candle as their context, from the first one's close on."""
    from ..core.timeframes import TIMEFRAMES
    from ..features.pipeline import higher_timeframe

    own, htf_bars, own_cumulative, htf_cumulative = version_reads(v, model, params)
    if revised_tf == tf:
        if own_cumulative:
            return first, None
        lo, rows = first, own
    elif htf_bars and revised_tf == higher_timeframe(info, tf):
        if htf_cumulative:
            return first + timedelta(seconds=TIMEFRAMES[revised_tf] - TIMEFRAMES[tf]), None
        lo = first + timedelta(seconds=TIMEFRAMES[revised_tf] - TIMEFRAMES[tf])
        last = last + timedelta(seconds=TIMEFRAMES[revised_tf] - TIMEFRAMES[tf])
        rows = -(-(htf_bars + 1) * TIMEFRAMES[revised_tf] // TIMEFRAMES[tf])
    else:
        return None
    src = "ohlcv" if v.table == "patterns" else "features"
    row = store.conn.execute(
        f"SELECT ts FROM {src} WHERE symbol = %s AND timeframe = %s AND ts >= %s ORDER BY ts OFFSET %s LIMIT 1",
        (info.symbol, tf, max(lo, last), rows - 1)).fetchone()
    return lo, (row[0] + timedelta(microseconds=1) if row else None)


def correction_spans(store, server, versions: list[Version], info, revisions: list[tuple], params: Params,
                     tables: tuple[str, ...] = tuple(TABLES)) -> list[tuple]:
    """[(version, timeframe, lo, hi)]: for every version of ``tables`` that applies to the symbol, the merged
    stretches the revisions ``(timeframe, first_ts, last_ts)`` may have changed (``hi`` None: to the end)."""
    spans: dict[tuple, list] = {}
    for v in versions:
        if v.table not in tables:
            continue
        model = None
        for tf in v.timeframes(info):
            for rtf, first, last in revisions:
                if model is None:
                    model = server.load(v.name, version=v.version)
                span = correction_span(store, v, model, info, tf, rtf, first, last, params)
                if span is not None:
                    spans.setdefault((v.name, v.version, tf), [v, []])[1].append(span)
    return [(v, tf, lo, hi) for (_, _, tf), (v, found) in spans.items() for lo, hi in _merge(found)]


def scope(v: Version, info, tf: str, lo: datetime, hi: datetime | None, seen: dict) -> tuple:
    """The stretch a recomputation covered: ``[lo, hi)``, or up to the last candle it read when open-ended (a
    candle written later was not read: its rows are not this recomputation's to supersede)."""
    if hi is None:
        hi = seen["last"] + timedelta(microseconds=1) if seen.get("last") is not None else lo
    return (v.name, v.version, info.symbol, tf, lo, max(hi, lo + timedelta(microseconds=1)))


def correct(store, server, versions: list[Version], info, revisions: list[tuple], params: Params,
            writer, tables: tuple[str, ...] = tuple(TABLES)) -> dict:
    """Rescore the stretches the revisions ``(timeframe, first_ts, last_ts)`` may have changed (``correction_spans``)
    into ``writer``: its flush writes only the rows whose value changed and supersedes the rows no longer
    produced. Returns {"rows_rescored", "rows_in_window", "spans"}: the candles whose output was recomputed and
    the candles (feature rows; candles for patterns) inside the stretches."""
    stats = {"rows_rescored": 0, "rows_in_window": 0, "spans": 0}
    src = {"patterns": "ohlcv"}
    for v, tf, lo, hi in correction_spans(store, server, versions, info, revisions, params, tables):
        seen: dict = {}
        rows = score_range(store, server, v, info, tf, lo, hi, params, seen)
        covered = scope(v, info, tf, lo, hi, seen)
        writer.add(v.table, rows, scope=covered)
        in_window = store.conn.execute(
            f"SELECT count(*) FROM {src.get(v.table, 'features')} WHERE symbol = %s AND timeframe = %s "
            "AND ts >= %s AND ts < %s", (info.symbol, tf, lo, covered[5])).fetchone()[0]
        stats["rows_in_window"] += in_window
        # candles rescored: a forecast row per step, a pattern only above the threshold (the scan covers each)
        stats["rows_rescored"] += in_window if v.table == "patterns" else len({r[4] for r in rows})
        stats["spans"] += 1
    return stats


def _merge(spans: list[tuple[datetime, datetime | None]]) -> list[tuple[datetime, datetime | None]]:
    out: list[list] = []
    for lo, hi in sorted(spans, key=lambda s: s[0]):
        if out and (out[-1][1] is None or lo <= out[-1][1]):
            out[-1][1] = None if (hi is None or out[-1][1] is None) else max(hi, out[-1][1])
        else:
            out.append([lo, hi])
    return [tuple(s) for s in out]


def utc(ts_us: int) -> datetime:
    return datetime.fromtimestamp(int(ts_us) / US, tz=timezone.utc)
