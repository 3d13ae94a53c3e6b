"""Alerts made with the outputs, judged on the candles that came, counted without reading history.

**Made with the output.** ``store.outputs.OutputWriter.flush`` calls :func:`on_flush` after it wrote the
``predictions`` rows of its transaction (the live batch's, the scheduled scoring's, a correction's). A current
row that became known in that flush and crosses an enabled rule of its model (``value >= threshold`` for side
``above``, ``<=`` for ``below``; the rule's symbols and timeframes, when it names some) becomes an alert on the
row's candle, stamped with the row's ``known_at``; the unique key (rule, model, version, symbol, timeframe, ts)
and ``ON CONFLICT DO NOTHING`` make a retried batch or a re-run add nothing. Only versions whose ``tp.target``
is a pump or a signal target (``parse_target``) alert. A crossing whose candle lies within the rule's cooldown
after the previous alert of the same rule, symbol and role is stored ``suppressed`` (never judged nor sent).
What goes out: a shadow version's alerts are ``shadow`` (statistics only), alerts from a backfill or committed
more than ``TP_ALERT_MAX_DELAY_S`` after their candle closed are ``stale``; the others are enqueued into
``alert_deliveries`` for each enabled destination whose send mode and models take them, in the same
transaction, and ``NOTIFY tp_alerts`` wakes the delivery worker at commit.

**Corrections.** When a flush replaces the output behind an alert (a corrected candle), the alert stays (it may
have been sent) and records the new value in ``current_value``; if the new value no longer crosses the rule (or
the recomputation no longer produces a row), it is marked ``retracted_at`` and, where a destination asks for
retractions and got the alert, an ``alert_retracted`` message is enqueued. Statistics keep the alert under its
original decision and count retractions apart.

**Judged on later candles** (:func:`evaluate`; the live batch calls it in its transaction for its series, the
``alerts`` schedule every minute for the rest). Only candles opened at or after the alert's candle closed, and
closed by now, count, each applied once: a pending alert keeps its running state (candles seen, the last one
applied, peak high and trough low), so the cost follows the new candles, never the history. The outcome follows
the version's target:

- pump (``close rises >= rise within horizon bars``): ``success`` at the first later closed candle whose close is
  at least ``(1 + rise) x entry`` (the alert candle's close); ``failed`` once the horizon-th later candle closed
  without. Side ``below`` (the model says no pump) is judged the other way round;
- signal (``sign of close[t+h] - close[t]``): at the horizon-th later candle, ``success`` when the close moved to
  the alert's side (up for ``above``, down for ``below``), else ``failed``;
- ``expired``: still pending when the (horizon + 2)-th open slot of the market's calendar after the candle has
  closed (``expires_at``; a weekend does not expire a forex alert: its slots are not open).

The deciding candle is recorded; a candle at or before an alert's last applied candle that comes again (a
revision) resets the alert and judges it again from its candle on (a later candle than the deciding one changes
nothing).

**Statistics** (:func:`stats`) read ``alert_stats`` (counters kept per model, version, symbol, timeframe, day,
role, in-sample and side as alerts are made, resolved and retracted) and ``alert_base`` (the target's base rate:
per series and day, how many candles had their label decided and how many met it, counted incrementally from
the first alert of the series on): indexed reads whose cost follows the days asked for, never the alerts.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone

from . import CHANNEL

SEND_MODES = ("alerts_only", "all", "positive_only", "negative_only")
SIDES = ("above", "below")
OUTCOMES = ("success", "failed", "expired")
SCHEMA_VERSION = 1
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_PUMP = re.compile(r"^pump: close rises >= ([0-9.eE+-]+) within (\d+) bars")
_SIGNAL = re.compile(r"^signal: sign of close\[t\+(\d+)\] - close\[t\]")


def max_delay_s() -> float:
    """TP_ALERT_MAX_DELAY_S (default 300): an alert committed later than this after its candle closed is stale."""
    from ..errors import InvalidInput

    raw = os.environ.get("TP_ALERT_MAX_DELAY_S", "").strip()
    if not raw:
        return 300.0
    try:
        v = float(raw)
    except ValueError:
        v = -1.0
    if not v >= 0:
        raise InvalidInput(f"TP_ALERT_MAX_DELAY_S={raw!r} is not a number of seconds >= 0", field="TP_ALERT_MAX_DELAY_S")
    return v


def parse_target(target: str | None) -> dict | None:
    """{"kind", "horizon", "rise"} of a version's ``tp.target``; None for a target alerts cannot judge."""
    if not target:
        return None
    m = _PUMP.match(target)
    if m:
        return {"kind": "pump", "horizon": int(m.group(2)), "rise": float(m.group(1))}
    m = _SIGNAL.match(target)
    if m:
        return {"kind": "signal", "horizon": int(m.group(1)), "rise": None}
    return None


def crosses(value: float, threshold: float, side: str) -> bool:
    return value >= threshold if side == "above" else value <= threshold


def _step(tf: str) -> timedelta:
    from ..core.timeframes import TIMEFRAMES

    return timedelta(seconds=TIMEFRAMES[tf])


def _us(ts: datetime) -> int:
    return (ts - EPOCH) // timedelta(microseconds=1)


def expires_at(category: str, exchange: str | None, tf: str, ts: datetime, horizon: int) -> datetime:
    """The close of the (horizon + 2)-th slot after the candle at ``ts`` in which the market trades."""
    import numpy as np

    from ..core.calendars import slot_open

    step_us = _us(EPOCH + _step(tf))
    need, first = horizon + 2, _us(ts) + step_us
    span = max(need * 4, 64)
    while True:
        slots = first + step_us * np.arange(span, dtype="int64")
        open_ = np.flatnonzero(slot_open(category, exchange, slots, step_us // 1_000_000))
        if len(open_) >= need:
            return EPOCH + timedelta(microseconds=int(slots[open_[need - 1]] + step_us))
        if span > 4_000_000:  # a market that never opens: never expires by the calendar
            return datetime.max.replace(tzinfo=timezone.utc)
        span *= 4


# ---- made with the outputs --------------------------------------------------------------------------------
def before_flush(conn, versions: dict, symbols: set[str]) -> bool:
    """Before a flush writes ``predictions`` rows of ``versions`` for ``symbols``: when alerts can follow (an
    enabled rule, or alerts, of one of the models), take the live path's per-symbol locks (in symbol order; a live
    batch holds them already, re-entrant): cooldowns, retractions and counters of a symbol are then written by one
    transaction at a time (the live batch, the scoring, the minute's pass). Returns whether alerts can follow."""
    from ..store.outbox import lock_symbol

    models = sorted({m for m, _ in versions})
    if not models or not symbols:
        return False
    if not conn.execute("SELECT EXISTS (SELECT 1 FROM alert_rules WHERE model_name = ANY(%(m)s) AND enabled AND "
                        "removed_at IS NULL) OR EXISTS (SELECT 1 FROM alerts WHERE model_name = ANY(%(m)s))",
                        {"m": models}).fetchone()[0]:
        return False
    for symbol in sorted(symbols):
        lock_symbol(conn, symbol)
    return True


def on_flush(conn, now: datetime, versions: dict, origin: str) -> dict:
    """Alerts for the ``predictions`` rows the writer's flush just made current (``_tp_stage_predictions`` holds
    them, ``_tp_scope`` its recomputed stretches), retractions of alerts whose output changed, and the deliveries
    they call for; in the flush's transaction. ``versions``: {(model, version): (role, target)} of the writer's
    versions; ``origin``: live | schedule | backfill. Returns counts."""
    out = {"alerts": 0, "suppressed": 0, "retracted": 0, "deliveries": 0}
    models = sorted({m for m, _ in versions})
    if not models:
        return out
    has_alerts = conn.execute("SELECT EXISTS (SELECT 1 FROM alerts WHERE model_name = ANY(%s))", (models,)).fetchone()[0]
    if has_alerts:
        _retract(conn, now, out)
    rules = conn.execute(
        "SELECT id, name, model_name, symbols, timeframes, threshold, side, cooldown_s FROM alert_rules "
        "WHERE enabled AND removed_at IS NULL AND model_name = ANY(%s) ORDER BY id", (models,)).fetchall()
    if rules:
        _create(conn, now, versions, origin, rules, out)
    if out["deliveries"]:
        conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
    return out


def _retract(conn, now: datetime, out: dict) -> None:
    changed = conn.execute(
        "WITH cur AS (SELECT p.model_name, p.model_version, p.symbol, p.timeframe, p.ts, p.value "
        " FROM _tp_stage_predictions s JOIN predictions p ON p.model_name = s.model_name "
        " AND p.model_version = s.model_version AND p.symbol = s.symbol AND p.timeframe = s.timeframe "
        " AND p.ts = s.ts AND p.superseded_at IS NULL AND p.known_at = %(now)s) "
        "UPDATE alerts a SET current_value = cur.value, retracted_at = CASE WHEN a.retracted_at IS NULL AND NOT "
        " (CASE a.side WHEN 'above' THEN cur.value >= a.threshold ELSE cur.value <= a.threshold END) "
        " THEN %(now)s ELSE a.retracted_at END "
        "FROM cur WHERE a.model_name = cur.model_name AND a.model_version = cur.model_version "
        "AND a.symbol = cur.symbol AND a.timeframe = cur.timeframe AND a.ts = cur.ts AND a.created_at < %(now)s "
        "RETURNING a.id, a.retracted_at = %(now)s", {"now": now}).fetchall()
    gone = conn.execute(
        "UPDATE alerts a SET retracted_at = %(now)s FROM _tp_scope sc WHERE a.model_name = sc.model_name "
        "AND a.model_version = sc.model_version AND a.symbol = sc.symbol AND a.timeframe = sc.timeframe "
        "AND a.ts >= sc.lo AND a.ts < sc.hi AND a.retracted_at IS NULL AND a.created_at < %(now)s AND NOT EXISTS "
        "(SELECT 1 FROM predictions p WHERE p.model_name = a.model_name AND p.model_version = a.model_version "
        " AND p.symbol = a.symbol AND p.timeframe = a.timeframe AND p.ts = a.ts AND p.superseded_at IS NULL) "
        "RETURNING a.id", {"now": now}).fetchall()
    ids = [i for i, newly in changed if newly] + [r[0] for r in gone]
    if not ids:
        return
    # an alert message not sent yet is not sent at all (nor its retraction); one being sent may arrive: the
    # retraction follows it
    conn.execute("UPDATE alert_deliveries SET status = 'stale', last_error = 'retracted before it was sent', "
                 "last_error_at = now() WHERE alert_id = ANY(%s) AND type = 'alert' AND status = 'pending'", (ids,))
    rows = conn.execute(
        "SELECT id, model_name, model_version, symbol, timeframe, ts, role, in_sample, side, target, status, send "
        "FROM alerts WHERE id = ANY(%s)", (ids,)).fetchall()
    _bump(conn, [(r[1:10], {"retracted": 1}) for r in rows if r[10] != "suppressed"])
    out["retracted"] += len(rows)
    out["deliveries"] += _follow_up(conn, [r[0] for r in rows if r[11] == "send" and r[10] != "suppressed"],
                                    "alert_retracted")


def _create(conn, now: datetime, versions: dict, origin: str, rules: list, out: dict) -> None:
    by_model: dict[str, list] = defaultdict(list)
    for r in rules:
        by_model[r[2]].append(r)
    cands = conn.execute(
        "SELECT p.model_name, p.model_version, p.symbol, p.timeframe, p.ts, p.value, p.in_sample, o.close "
        "FROM _tp_stage_predictions s JOIN predictions p ON p.model_name = s.model_name "
        "AND p.model_version = s.model_version AND p.symbol = s.symbol AND p.timeframe = s.timeframe "
        "AND p.ts = s.ts AND p.superseded_at IS NULL AND p.known_at = %s "
        "JOIN ohlcv o ON o.symbol = p.symbol AND o.timeframe = p.timeframe AND o.ts = p.ts "
        "WHERE p.model_name = ANY(%s) ORDER BY p.ts", (now, sorted(by_model))).fetchall()
    if not cands:
        return
    delay = max_delay_s()
    cal: dict[str, tuple] = {}
    new: list[dict] = []
    last_kept: dict[tuple, datetime | None] = {}
    for name, ver, symbol, tf, ts, value, in_sample, close in cands:
        role, target = versions.get((name, ver), (None, None))
        t = parse_target(target)
        if t is None or role not in ("champion", "shadow") or value is None or not math.isfinite(value):
            continue
        for rid, _, _, symbols, tfs, threshold, side, cooldown in by_model[name]:
            if (symbols and symbol not in symbols) or (tfs and tf not in tfs) or not crosses(value, threshold, side):
                continue
            status = "pending"
            if cooldown > 0:
                k = (rid, symbol, role)
                if k not in last_kept:
                    last_kept[k] = conn.execute(
                        "SELECT max(ts) FROM alerts WHERE rule_id = %s AND symbol = %s AND role = %s "
                        "AND status <> 'suppressed' AND ts < %s", (rid, symbol, role, ts)).fetchone()[0]
                prev = last_kept[k]
                if prev is not None and (ts - prev).total_seconds() < cooldown:
                    status = "suppressed"
                else:
                    last_kept[k] = ts
            close_at = ts + _step(tf)
            send = ("shadow" if role == "shadow" else "stale" if origin == "backfill"
                    or (now - close_at).total_seconds() > delay else "send")
            if symbol not in cal:
                cal[symbol] = conn.execute("SELECT category, exchange FROM symbols WHERE symbol = %s",
                                           (symbol,)).fetchone() or ("crypto", None)
            new.append({"rule_id": rid, "model_name": name, "model_version": ver, "symbol": symbol, "timeframe": tf,
                        "ts": ts, "candle_close": close_at, "created_at": now, "role": role,
                        "in_sample": bool(in_sample), "value": float(value), "current_value": float(value), "threshold": float(threshold),
                        "side": side, "target": target, "kind": t["kind"], "horizon": t["horizon"],
                        "rise": t["rise"], "entry": float(close), "status": status, "send": send,
                        "expires_at": expires_at(cal[symbol][0], cal[symbol][1], tf, ts, t["horizon"])})
    if not new:
        return
    cols = list(new[0])
    ids = []
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO alerts ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))}) "
            "ON CONFLICT DO NOTHING RETURNING id", [tuple(a[c] for c in cols) for a in new], returning=True)
        for a in new:
            row = cur.fetchone()
            ids.append(row[0] if row else None)
            if not cur.nextset():
                break
    made = [(i, a) for i, a in zip(ids, new) if i is not None]
    if not made:
        return
    out["alerts"] += sum(1 for _, a in made if a["status"] == "pending")
    out["suppressed"] += sum(1 for _, a in made if a["status"] == "suppressed")
    _bump(conn, [(_skey(a), {a["status"]: 1, **({"stale": 1} if a["send"] == "stale" else {})}) for _, a in made])
    first: dict[tuple, datetime] = {}
    for _, a in made:
        k = (a["target"], a["symbol"], a["timeframe"])
        first[k] = min(first.get(k, a["ts"]), a["ts"])
    # the base rate is counted from the series' earliest alert on; an alert on earlier candles (a backfill) adds
    # the stretch before to count
    conn.cursor().executemany(
        "INSERT INTO alert_base_cursor AS c (target, symbol, timeframe, first_ts, last_ts) "
        "VALUES (%(t)s, %(s)s, %(tf)s, %(f)s, %(f)s - %(step)s) ON CONFLICT (target, symbol, timeframe) DO UPDATE SET "
        "todo_from = CASE WHEN EXCLUDED.first_ts < c.first_ts THEN least(coalesce(c.todo_from, EXCLUDED.first_ts), "
        " EXCLUDED.first_ts) ELSE c.todo_from END, "
        "todo_to = CASE WHEN EXCLUDED.first_ts < c.first_ts THEN coalesce(c.todo_to, c.first_ts) ELSE c.todo_to END, "
        "first_ts = least(c.first_ts, EXCLUDED.first_ts)",
        [{"t": k[0], "s": k[1], "tf": k[2], "f": f, "step": _step(k[2])} for k, f in sorted(first.items())])
    out["deliveries"] += _enqueue(conn, [(i, a) for i, a in made if a["send"] == "send" and a["status"] == "pending"],
                                  "alert")


def _skey(a: dict) -> tuple:
    return (a["model_name"], a["model_version"], a["symbol"], a["timeframe"], a["ts"], a["role"], a["in_sample"],
            a["side"], a["target"])


# ---- the messages -----------------------------------------------------------------------------------------
def _destinations(conn) -> list[tuple]:
    return conn.execute("SELECT id, send_mode, resolutions, retractions, models FROM alert_destinations "
                        "WHERE enabled ORDER BY id").fetchall()


def wants(send_mode: str, side: str, msg_type: str, resolutions: bool, retractions: bool) -> bool:
    """Whether a destination takes a message: ``alerts_only`` the alerts (and the resolutions and retractions it
    turned on); ``all`` every alert, resolution and retraction; ``positive_only`` / ``negative_only`` the alerts
    of side above / below (and their resolutions and retractions when turned on)."""
    if send_mode == "positive_only" and side != "above":
        return False
    if send_mode == "negative_only" and side != "below":
        return False
    if msg_type == "alert":
        return True
    if msg_type == "alert_resolved":
        return resolutions or send_mode == "all"
    if msg_type == "alert_retracted":
        return retractions or send_mode == "all"
    return False


def payload(a: dict, msg_type: str, key: str, hit: dict | None) -> dict:
    """The flat JSON object a webhook receives (an n8n Webhook node reads it as it is)."""
    def iso(t):
        return t.isoformat() if t is not None else None

    outcome = a["status"] if a["status"] in OUTCOMES else None
    return {"type": msg_type, "key": key, "schema_version": SCHEMA_VERSION, "alert_id": a["id"],
            "model": a["model_name"], "model_version": a["model_version"], "symbol": a["symbol"],
            "timeframe": a["timeframe"], "ts": iso(a["ts"]), "candle_close": iso(a["candle_close"]),
            "probability": a["value"], "current_probability": a.get("current_value", a["value"]),
            "threshold": a["threshold"], "side": a["side"], "price": a["entry"], "target": a["target"],
            "horizon": a["horizon"], "status": "retracted" if msg_type == "alert_retracted" else a["status"],
            "outcome": outcome, "deciding_ts": iso(a.get("deciding_ts")), "deciding_price": a.get("deciding_close"),
            "hit_rate": (hit or {}).get("hit_rate"), "hit_rate_n": (hit or {}).get("n", 0)}


_HIT_CACHE: dict[tuple, tuple[float, dict]] = {}
_HIT_TTL_S = 60.0


def _hit_rates(conn, pairs: set) -> dict:
    """The champion's out-of-sample hit rate of each (model, version) for the messages: read from the counters at
    most once a minute per version and process (a message's figure may be a minute old)."""
    import time

    out, now = {}, time.monotonic()
    for name, ver in pairs:
        hit = _HIT_CACHE.get((name, ver))
        if hit is not None and now - hit[0] < _HIT_TTL_S:
            out[(name, ver)] = hit[1]
            continue
        s, f = conn.execute("SELECT coalesce(sum(success), 0), coalesce(sum(failed), 0) FROM alert_stats "
                            "WHERE model_name = %s AND model_version = %s AND role = 'champion' AND NOT in_sample",
                            (name, ver)).fetchone()
        s, n = int(s), int(s + f)
        out[(name, ver)] = {"hit_rate": round(s / n, 4) if n else None, "n": n}
        _HIT_CACHE[(name, ver)] = (now, out[(name, ver)])
    return out


def _enqueue(conn, alerts: list[tuple[int, dict]], msg_type: str, only: dict | None = None) -> int:
    """Deliveries of ``msg_type`` for the alerts to every destination that wants them (``only``: {alert id: the
    destination ids that got its alert message}). Returns how many were enqueued."""
    if not alerts:
        return 0
    dests = _destinations(conn)
    if not dests:
        return 0
    hits = _hit_rates(conn, {(a["model_name"], a["model_version"]) for _, a in alerts})
    rows = []
    for aid, a in alerts:
        a = {**a, "id": aid}
        key = f"alert:{aid}:{msg_type}"
        body = json.dumps(payload(a, msg_type, key, hits.get((a["model_name"], a["model_version"]))))
        for did, mode, res, ret, models in dests:
            if models and a["model_name"] not in models:
                continue
            if only is not None and did not in only.get(aid, ()):
                continue
            if wants(mode, a["side"], msg_type, res, ret):
                rows.append((did, aid, key, msg_type, body))
    if not rows:
        return 0
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO alert_deliveries (destination_id, alert_id, key, type, payload) "
                        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", rows)
        return max(cur.rowcount, 0) if cur.rowcount is not None else len(rows)


_ALERT_COLS = ("id", "rule_id", "model_name", "model_version", "symbol", "timeframe", "ts", "candle_close",
               "created_at", "role", "in_sample", "value", "current_value", "threshold", "side", "target", "kind",
               "horizon", "rise", "entry", "status", "send", "retracted_at", "candles_seen", "last_candle_ts",
               "peak", "trough", "deciding_ts", "deciding_close", "resolved_at", "expires_at")


def _alerts_by_id(conn, ids: list[int]) -> dict[int, dict]:
    rows = conn.execute(f"SELECT {', '.join(_ALERT_COLS)} FROM alerts WHERE id = ANY(%s)", (ids,)).fetchall()
    return {r[0]: dict(zip(_ALERT_COLS, r)) for r in rows}


def _follow_up(conn, ids: list[int], msg_type: str) -> int:
    """Resolution or retraction messages for sent alerts, to the destinations that got the alert and ask for it."""
    if not ids:
        return 0
    got: dict[int, set] = defaultdict(set)
    for aid, did in conn.execute("SELECT alert_id, destination_id FROM alert_deliveries WHERE alert_id = ANY(%s) "
                                 "AND type = 'alert' AND status <> 'stale'", (ids,)).fetchall():
        got[aid].add(did)
    if not got:
        return 0
    alerts = _alerts_by_id(conn, sorted(got))
    return _enqueue(conn, [(i, alerts[i]) for i in sorted(alerts)], msg_type, only=got)


# ---- counters ---------------------------------------------------------------------------------------------
_COUNTERS = ("pending", "success", "failed", "expired", "suppressed", "retracted", "stale", "success_s", "peak_ret",
             "trough_ret", "resolved", "ranged")


def _bump(conn, deltas: list[tuple[tuple, dict]]) -> None:
    """Add to ``alert_stats``: each (key, {counter: delta}); key = (model, version, symbol, timeframe, ts, role,
    in_sample, side, target)."""
    acc: dict[tuple, dict] = {}
    for key, d in deltas:
        name, ver, symbol, tf, ts, role, ins, side, target = key
        k = (name, ver, symbol, tf, ts.astimezone(timezone.utc).date(), role, bool(ins), side, target)
        cur = acc.setdefault(k, dict.fromkeys(_COUNTERS, 0))
        for c, v in d.items():
            cur[c] += v
    if not acc:
        return
    sets = ", ".join(f"{c} = s.{c} + EXCLUDED.{c}" for c in _COUNTERS)
    conn.cursor().executemany(
        f"INSERT INTO alert_stats AS s (model_name, model_version, symbol, timeframe, day, role, in_sample, side, "
        f"target, {', '.join(_COUNTERS)}) VALUES ({', '.join(['%s'] * (9 + len(_COUNTERS)))}) "
        f"ON CONFLICT (model_name, model_version, symbol, timeframe, day, role, in_sample, side) DO UPDATE SET {sets}",
        [k + tuple(v[c] for c in _COUNTERS) for k, v in sorted(acc.items(), key=lambda kv: kv[0][:8])])


def _outcome_delta(a: dict, sign: int) -> dict:
    """The counters an outcome adds (sign 1) or takes back (sign -1)."""
    d = {a["status"]: sign, "pending": -sign, "resolved": sign}
    if a["status"] == "success" and a["deciding_ts"] is not None:
        d["success_s"] = sign * (a["deciding_ts"] + _step(a["timeframe"]) - a["candle_close"]).total_seconds()
    if a["peak"] is not None and a["entry"]:
        d["peak_ret"] = sign * (a["peak"] / a["entry"] - 1)
        d["trough_ret"] = sign * (a["trough"] / a["entry"] - 1)
        d["ranged"] = sign
    return d


def _akey(a: dict) -> tuple:
    return (a["model_name"], a["model_version"], a["symbol"], a["timeframe"], a["ts"], a["role"], a["in_sample"],
            a["side"], a["target"])


# ---- judged on later candles ------------------------------------------------------------------------------
def judge(a: dict, candles: list[tuple]) -> dict:
    """Apply ``candles`` (ts, high, low, close; ascending, closed) to the pending alert ``a`` in place, from the
    first one opened at or after its candle's close and after the last one it applied (found by bisection: the
    cost follows the alert's new candles); returns it. Each candle is applied once: the running state moves on."""
    from bisect import bisect_left, bisect_right

    h = a["horizon"]
    stamps = [c[0] for c in candles]
    i = bisect_left(stamps, a["candle_close"])
    if a["last_candle_ts"] is not None:
        i = max(i, bisect_right(stamps, a["last_candle_ts"]))
    for ts, high, low, close in candles[i:]:
        a["candles_seen"] += 1
        a["last_candle_ts"] = ts
        a["peak"] = high if a["peak"] is None else max(a["peak"], high)
        a["trough"] = low if a["trough"] is None else min(a["trough"], low)
        decided = None
        if a["kind"] == "pump":
            met = close >= (1 + (a["rise"] or 0)) * a["entry"]
            if met:
                decided = "success" if a["side"] == "above" else "failed"
            elif a["candles_seen"] >= h:
                decided = "failed" if a["side"] == "above" else "success"
        elif a["candles_seen"] >= h:
            up, down = close > a["entry"], close < a["entry"]
            decided = "success" if (up if a["side"] == "above" else down) else "failed"
        if decided:
            a["status"], a["deciding_ts"], a["deciding_close"] = decided, ts, close
            break
    return a


def due(conn, now: datetime | None = None) -> bool:
    """Whether the scheduled pass has anything to do: a pending alert whose series has a candle closed after its
    last applied one, or past its expiry (the partial index on pending alerts, one probe each), or a stored
    correction not yet applied in a series that has alerts (one probe per such series)."""
    return conn.execute(
        "SELECT EXISTS (SELECT 1 FROM alerts a WHERE a.status = 'pending' AND (a.expires_at <= %(now)s OR EXISTS "
        "(SELECT 1 FROM ohlcv o WHERE o.symbol = a.symbol AND o.timeframe = a.timeframe "
        " AND o.ts >= greatest(a.candle_close, a.last_candle_ts + interval '1 microsecond') "
        " AND o.ts <= %(now)s - (a.candle_close - a.ts)))) "
        "OR EXISTS (SELECT 1 FROM (SELECT DISTINCT symbol, timeframe FROM alert_base_cursor) c "
        " WHERE EXISTS (SELECT 1 FROM ohlcv_revisions r WHERE r.symbol = c.symbol AND r.timeframe = c.timeframe "
        " AND r.alerts_done_at IS NULL))",
        {"now": now or datetime.now(timezone.utc)}).fetchone()[0]


def evaluate(conn, series: list[tuple[str, str]] | None = None, revised: dict | None = None,
             now: datetime | None = None, scheduled: bool | None = None) -> dict:
    """Judge the pending alerts on their new closed candles, re-judge those a corrected candle touches, expire
    those past their expiry, count the base rate, and enqueue the resolution messages.

    - A live batch (``scheduled`` False) passes its ``series`` [(symbol, timeframe)] and its candles as
      ``revised`` {(symbol, timeframe): [candle ts]} (a candle at or before an alert's last applied one is a
      correction): in its transaction, under the per-symbol locks it holds. Only the series that have alerts are
      looked at (one query for the batch), only the alerts not yet past their expiry are judged, and the base rate
      moves on by at most 2,000 candles a series: a backfill's old alerts never weigh on a live transaction.
    - The scheduled pass (no ``series``): every series with a pending alert, an open correction or a base rate to
      count, one symbol at a time, each in its own transaction under the live path's lock for that symbol (taken
      first, as a live batch does): a live batch and the pass never judge the same alert at once.
    Returns counts."""
    out = {"series": 0, "judged": 0, "resolved": 0, "rejudged": 0, "deliveries": 0, "base_candles": 0}
    live = scheduled is False or (series is not None and scheduled is None)
    if series is not None:
        now = now or conn.execute("SELECT clock_timestamp()").fetchone()[0]
        with conn.transaction():
            tracked = {tuple(r) for r in conn.execute(
                "SELECT DISTINCT symbol, timeframe FROM alert_base_cursor WHERE symbol = ANY(%s)",
                (sorted({s for s, _ in series}),)).fetchall()}
            todo = sorted(set(series) & tracked)
            if todo:
                _evaluate_symbol(conn, todo, {k: [(t, t) for t in v] for k, v in (revised or {}).items()},
                                 now, live, out)
        return out
    now = now or datetime.now(timezone.utc)
    symbols = [r[0] for r in conn.execute(
        "SELECT symbol FROM alerts WHERE status = 'pending' UNION SELECT symbol FROM alert_base_cursor "
        "ORDER BY 1").fetchall()]
    with conn.transaction():  # corrections of series without alerts: nothing to judge again
        conn.execute("UPDATE ohlcv_revisions r SET alerts_done_at = clock_timestamp() WHERE r.alerts_done_at IS NULL "
                     "AND NOT EXISTS (SELECT 1 FROM alert_base_cursor c WHERE c.symbol = r.symbol "
                     "AND c.timeframe = r.timeframe)")
    for symbol in symbols:
        from ..store.outbox import lock_symbol

        with conn.transaction():
            lock_symbol(conn, symbol)
            todo = sorted({tuple(r) for r in conn.execute(
                "SELECT symbol, timeframe FROM alerts WHERE status = 'pending' AND symbol = %(s)s "
                "UNION SELECT symbol, timeframe FROM alert_base_cursor WHERE symbol = %(s)s", {"s": symbol})})
            _evaluate_symbol(conn, todo, _open_revisions(conn, symbol), now, False, out)
    return out


def _evaluate_symbol(conn, series: list[tuple[str, str]], revised: dict, now: datetime, live: bool,
                     out: dict) -> None:
    """One symbol's series (the caller holds its lock, in its transaction): re-judge, judge, count the base."""
    resolved: list[int] = []
    for key in sorted(series):
        symbol, tf = key
        if revised.get(key):
            out["rejudged"] += _rejudge(conn, symbol, tf, revised[key])
        got = _evaluate_series(conn, symbol, tf, now, fresh_only=live)
        out["series"] += 1
        out["judged"] += got["judged"]
        resolved += got["resolved"]
        out["base_candles"] += _count_base(conn, symbol, tf, now, limit=2_000 if live else 200_000)
    out["resolved"] += len(resolved)
    if resolved:
        n = _follow_up(conn, resolved, "alert_resolved")
        out["deliveries"] += n
        if n:
            conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))


def _open_revisions(conn, symbol: str, limit: int = 10_000) -> dict:
    """The symbol's stored corrections not yet applied to its alerts, as {(symbol, timeframe): [(first, last)]},
    marked applied (in the caller's transaction: a failed pass leaves them open)."""
    from ..core.timeframes import TIMEFRAMES

    rows = conn.execute(
        "UPDATE ohlcv_revisions SET alerts_done_at = clock_timestamp() WHERE id IN (SELECT id FROM ohlcv_revisions "
        "WHERE symbol = %s AND alerts_done_at IS NULL ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) "
        "RETURNING symbol, timeframe, first_ts, coalesce(last_ts, first_ts)", (symbol, limit)).fetchall()
    out: dict[tuple, list] = {}
    for sym, tf, first, last in rows:
        if tf in TIMEFRAMES:
            out.setdefault((sym, tf), []).append((first, last))
    return out


_STATE = ("candles_seen", "last_candle_ts", "peak", "trough", "deciding_ts", "deciding_close", "resolved_at",
          "status", "entry")


def _save(conn, alerts: list[dict]) -> None:
    conn.cursor().executemany(
        f"UPDATE alerts SET {', '.join(f'{c} = %({c})s' for c in _STATE)} WHERE id = %(id)s",
        [{c: a[c] for c in (*_STATE, "id")} for a in alerts])


def _evaluate_series(conn, symbol: str, tf: str, now: datetime, fresh_only: bool = False,
                     max_candles: int = 50_000) -> dict:
    rows = conn.execute(
        f"SELECT {', '.join(_ALERT_COLS)} FROM alerts WHERE status = 'pending' AND symbol = %s AND timeframe = %s "
        + ("AND expires_at > %s " if fresh_only else "") + "ORDER BY ts FOR UPDATE",
        (symbol, tf, now) if fresh_only else (symbol, tf)).fetchall()
    if not rows:
        return {"judged": 0, "resolved": []}
    alerts = [dict(zip(_ALERT_COLS, r)) for r in rows]
    step = _step(tf)
    start = min(a["last_candle_ts"] + timedelta(microseconds=1) if a["last_candle_ts"] else a["candle_close"]
                for a in alerts)
    candles = conn.execute(
        "SELECT ts, high, low, close FROM ohlcv WHERE symbol = %s AND timeframe = %s AND ts >= %s AND ts <= %s "
        "ORDER BY ts LIMIT %s", (symbol, tf, start, now - step, max_candles)).fetchall()
    # a pass reads at most max_candles (a backfill's old alerts): the rest is the next pass's, and only what the
    # candles read cover may expire
    horizon_end = candles[-1][0] + step if len(candles) == max_candles else now
    changed, resolved, deltas = [], [], []
    for a in alerts:
        before = (a["candles_seen"], a["status"])
        judge(a, candles)
        if a["status"] == "pending" and a["expires_at"] is not None and a["expires_at"] <= horizon_end:
            a["status"] = "expired"
        if a["status"] != "pending":
            a["resolved_at"] = now
            resolved.append(a["id"])
            deltas.append((_akey(a), _outcome_delta(a, 1)))
        if (a["candles_seen"], a["status"]) != before:
            changed.append(a)
    if changed:
        _save(conn, changed)
    if deltas:
        _bump(conn, deltas)
    return {"judged": len(changed), "resolved": resolved}


def _rejudge(conn, symbol: str, tf: str, spans: list[tuple[datetime, datetime]]) -> int:
    """Reset the alerts of the series whose judged stretch a corrected candle lies in (each span (first, last)
    of corrected candles against the alert's [candle, last applied or deciding candle]; the alert's own candle
    too: its close is the entry, read again): judged again from their candle on by the evaluation that follows.
    A correction after an alert's deciding candle, or after its last applied one, touches nothing."""
    lo, hi = min(f for f, _ in spans), max(last for _, last in spans)
    rows = conn.execute(
        f"SELECT {', '.join('a.' + c for c in _ALERT_COLS)} FROM alerts a WHERE a.symbol = %(s)s "
        "AND a.timeframe = %(tf)s AND a.status IN ('pending', 'success', 'failed') AND a.ts <= %(hi)s AND ("
        "(a.status = 'pending' AND coalesce(a.last_candle_ts, a.ts) >= %(lo)s) OR a.deciding_ts >= %(lo)s) "
        "AND EXISTS (SELECT 1 FROM unnest(%(f)s::timestamptz[], %(l)s::timestamptz[]) r(f, l) "
        " WHERE a.ts <= r.l AND r.f <= coalesce(a.deciding_ts, a.last_candle_ts, a.ts)) "
        "ORDER BY a.id FOR UPDATE",
        {"s": symbol, "tf": tf, "lo": lo, "hi": hi, "f": [f for f, _ in spans], "l": [x for _, x in spans]}
    ).fetchall()
    alerts = [dict(zip(_ALERT_COLS, r)) for r in rows]
    if not alerts:
        return 0
    closes = dict(conn.execute("SELECT ts, close FROM ohlcv WHERE symbol = %s AND timeframe = %s AND ts = ANY(%s)",
                               (symbol, tf, sorted({a["ts"] for a in alerts}))).fetchall())
    # a new alert's own candle in its batch changes nothing: left alone
    alerts = [a for a in alerts if a["candles_seen"] or a["status"] != "pending"
              or closes.get(a["ts"], a["entry"]) != a["entry"]]
    if not alerts:
        return 0
    deltas = [(_akey(a), _outcome_delta(a, -1)) for a in alerts if a["status"] != "pending"]
    for a in alerts:
        a.update(status="pending", candles_seen=0, last_candle_ts=None, peak=None, trough=None, deciding_ts=None,
                 deciding_close=None, resolved_at=None, entry=closes.get(a["ts"], a["entry"]))
    _save(conn, alerts)
    _bump(conn, deltas)
    return len(alerts)


def _count_base(conn, symbol: str, tf: str, now: datetime, limit: int = 200_000) -> int:
    """The base rate's counts for each target tracked on the series: forward from its cursor, and the stretch
    still to count before it (a backfill's alerts on earlier candles); a candle counts once the horizon-th later
    candle closed (pump: a close within reaches the rise; signal: the close at the horizon is higher, lower)."""
    step = _step(tf)
    cursors = conn.execute("SELECT target, last_ts, todo_from, todo_to FROM alert_base_cursor WHERE symbol = %s "
                           "AND timeframe = %s", (symbol, tf)).fetchall()
    counted = 0
    for target, last_ts, todo_from, todo_to in cursors:
        t = parse_target(target)
        if t is None:
            continue
        n, upto, _ = _count_stretch(conn, target, t, symbol, tf, last_ts, None, now - step, limit)
        if n:
            conn.execute("UPDATE alert_base_cursor SET last_ts = %s WHERE target = %s AND symbol = %s "
                         "AND timeframe = %s", (upto, target, symbol, tf))
            counted += n
        if todo_from is not None:
            n, upto, done = _count_stretch(conn, target, t, symbol, tf, todo_from - timedelta(microseconds=1),
                                           todo_to, now - step, limit)
            if n or done:
                conn.execute("UPDATE alert_base_cursor SET todo_from = %s, todo_to = %s WHERE target = %s "
                             "AND symbol = %s AND timeframe = %s",
                             (None if done else upto + timedelta(microseconds=1), None if done else todo_to,
                              target, symbol, tf))
            counted += n
    return counted


def _count_stretch(conn, target: str, t: dict, symbol: str, tf: str, after: datetime, before: datetime | None,
                   closed_by: datetime, limit: int) -> tuple[int, datetime | None, bool]:
    """Count the labels of the candles after ``after`` (and before ``before``) whose horizon has closed, at most
    ``limit``, into ``alert_base``; returns (how many, the last one counted, whether every candle before ``before``
    is counted)."""
    import numpy as np

    h = t["horizon"]
    rows = conn.execute("SELECT ts, close FROM ohlcv WHERE symbol = %s AND timeframe = %s AND ts > %s "
                        "AND ts <= %s ORDER BY ts LIMIT %s", (symbol, tf, after, closed_by, limit + h)).fetchall()
    n = len(rows) - h
    done = False
    if before is not None:
        k = sum(1 for r in rows if r[0] < before)
        # every candle before ``before`` was read (a later one was too) and has its horizon: the stretch is done
        done = k < len(rows) and k <= max(n, 0)
        n = min(n, k)
    if n <= 0:
        return 0, None, done
    close = np.array([r[1] for r in rows], dtype=float)
    if t["kind"] == "pump":
        from numpy.lib.stride_tricks import sliding_window_view

        met = sliding_window_view(close[1:], h)[:n].max(axis=1) >= (1 + t["rise"]) * close[:n]
        down = np.zeros(n, dtype=bool)
    else:
        met, down = close[h:h + n] > close[:n], close[h:h + n] < close[:n]
    per_day: dict[date, list[int]] = defaultdict(lambda: [0, 0, 0])
    for i in range(n):
        d = per_day[rows[i][0].astimezone(timezone.utc).date()]
        d[0] += 1
        d[1] += int(met[i])
        d[2] += int(down[i])
    conn.cursor().executemany(
        "INSERT INTO alert_base AS b (target, symbol, timeframe, day, n, met, down) VALUES (%s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (target, symbol, timeframe, day) DO UPDATE SET n = b.n + EXCLUDED.n, met = b.met + EXCLUDED.met, "
        "down = b.down + EXCLUDED.down",
        [(target, symbol, tf, d, *v) for d, v in sorted(per_day.items())])
    return n, rows[n - 1][0], done


# ---- statistics -------------------------------------------------------------------------------------------
def wilson(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (95 % by default); None at n = 0."""
    if n <= 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def stats(conn, *, model: str | None = None, version: str | None = None, symbol: str | None = None,
          timeframe: str | None = None, since: date | None = None, until: date | None = None) -> list[dict]:
    """Per model, version, symbol, timeframe, role, in-sample and side over the days [since, until] of the alerts'
    candles: counts per status, retractions and stale ones apart, the hit rate success / (success + failed) with
    its Wilson 95 % interval (None at n = 0), the target's base rate over the same series and days and the lift
    over it, the mean time from the candle's close to success, and the mean peak and trough against the entry."""
    where, args = ["true"], {}
    for col, val in (("model_name", model), ("model_version", version), ("symbol", symbol), ("timeframe", timeframe)):
        if val is not None:
            where.append(f"s.{col} = %({col})s")
            args[col] = str(val)
    if since is not None:
        where.append("s.day >= %(since)s")
        args["since"] = since
    if until is not None:
        where.append("s.day <= %(until)s")
        args["until"] = until
    sums = ", ".join(f"sum(s.{c})" for c in _COUNTERS)
    rows = conn.execute(
        f"SELECT s.model_name, s.model_version, s.symbol, s.timeframe, s.role, s.in_sample, s.side, s.target, "
        f"min(s.day), max(s.day), {sums} FROM alert_stats s WHERE {' AND '.join(where)} "
        "GROUP BY 1, 2, 3, 4, 5, 6, 7, 8 ORDER BY 1, 2, 3, 4, 5 DESC, 6, 7", args).fetchall()
    base_cache: dict[tuple, tuple] = {}
    out = []
    for r in rows:
        name, ver, sym, tf, role, ins, side, target, d0, d1 = r[:10]
        c = dict(zip(_COUNTERS, (float(x) for x in r[10:])))
        bk = (target, sym, tf, since or d0, until or d1)
        if bk not in base_cache:
            base_cache[bk] = conn.execute(
                "SELECT coalesce(sum(n), 0), coalesce(sum(met), 0), coalesce(sum(down), 0) FROM alert_base "
                "WHERE target = %s AND symbol = %s AND timeframe = %s AND day >= %s AND day <= %s", bk).fetchone()
        bn, bmet, bdown = (int(x) for x in base_cache[bk])
        s, f = int(c["success"]), int(c["failed"])
        n = s + f
        ci = wilson(s, n)
        base = None
        if bn:  # how often the alert's side would have been right on any candle of those days
            base = (bmet / bn if side == "above" else bdown / bn if target.startswith("signal")
                    else 1 - bmet / bn)
        hit = s / n if n else None
        out.append({
            "model": name, "version": ver, "symbol": sym, "timeframe": tf, "role": role,
            "sample": "in_sample" if ins else "out_of_sample", "side": side, "target": target,
            "first_day": d0.isoformat(), "last_day": d1.isoformat(),
            **{k: int(c[k]) for k in ("pending", "success", "failed", "expired", "suppressed", "retracted", "stale")},
            "n": n, "hit_rate": round(hit, 4) if hit is not None else None,
            "hit_rate_ci95": [round(ci[0], 4), round(ci[1], 4)] if ci else None,
            "base_rate": round(base, 4) if base is not None else None, "base_candles": int(bn),
            "lift": round(hit / base, 3) if hit is not None and base else None,
            "mean_time_to_success_s": round(c["success_s"] / s, 1) if s else None,
            "mean_peak_return": round(c["peak_ret"] / c["ranged"], 5) if c["ranged"] else None,
            "mean_trough_return": round(c["trough_ret"] / c["ranged"], 5) if c["ranged"] else None,
        })
    return out


def summary(conn) -> dict:
    """What the ``alerts`` asset records: pending, resolved in the last hour and day, overdue (pending past their
    expiry: the evaluation is behind), and the champions' out-of-sample hit rates per model."""
    pending, overdue, oldest = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE expires_at < clock_timestamp() - interval '2 minutes'), "
        "extract(epoch FROM clock_timestamp() - min(expires_at) FILTER (WHERE expires_at < clock_timestamp())) "
        "FROM alerts WHERE status = 'pending'").fetchone()
    per_model = conn.execute(
        "SELECT model_name, sum(success), sum(failed), sum(expired), sum(retracted) FROM alert_stats "
        "WHERE role = 'champion' AND NOT in_sample GROUP BY 1 ORDER BY 1").fetchall()
    models = {}
    for name, s, f, e, rt in per_model:
        s, f, e, rt = int(s), int(f), int(e), int(rt)
        n = s + f
        ci = wilson(int(s), n)
        models[name] = {"success": int(s), "failed": int(f), "expired": int(e), "retracted": int(rt),
                        "hit_rate": round(s / n, 4) if n else None,
                        "hit_rate_ci95": [round(ci[0], 4), round(ci[1], 4)] if ci else None}
    return {"pending": int(pending), "overdue": int(overdue), "overdue_s": round(float(oldest or 0), 1),
            "resolved": {m: v["success"] + v["failed"] + v["expired"] for m, v in models.items()},
            "models": models}
