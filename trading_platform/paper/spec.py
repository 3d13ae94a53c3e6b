"""A strategy as data: a validated spec (YAML or JSON), versioned by the hash of its canonical form.

A spec names what to trade (``universe``: symbol and timeframe pairs of one quote currency), when (``rules`` on
the models' outputs: a signal threshold, a regime filter, a pump veto, exits), what it costs (``costs``), how much
(``risk``; none: fully invested, no leverage) and from how much (``cash``). ``kind`` ``buy_and_hold`` and
``random_entry`` are the controls, run through the same engine, costs and risk rules. Every key is checked: an
unknown one, a threshold outside [0, 1], a negative cost is refused naming its path (``rules.signal.min``). What
needs the store (the symbols exist, list the timeframe, share a quote currency; the models are registered) is
checked by ``api.paper``; this module is pure.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from ..core import numbers
from ..core.nesting import json_depth_exceeds
from ..errors import InvalidInput

KINDS = ("rules", "buy_and_hold", "random_entry")
REGIMES = ("bear", "sideways", "bull", "high_volatility")
SIDES = ("long",)  # long-only (a short side needs borrow costs the spec cannot state yet)

_TOP = {"name", "kind", "universe", "rules", "costs", "risk", "cash", "allow_in_sample", "latency_bars",
        "reject_rate", "description"}
_RULES = {"side", "signal", "regime", "pump_veto", "confirm", "stop_loss", "take_profit", "time_exit"}
_SIGNAL = {"model", "min", "max"}
_REGIME = {"model", "allow"}
_VETO = {"model", "threshold"}
_CONFIRM = {"table", "model", "min", "max"}
_COSTS = {"fee_bps", "spread_bps", "slippage_bps", "impact", "participation"}
_RISK = {"position_fraction", "risk_per_trade", "max_symbol_fraction", "max_total_fraction", "max_positions",
         "daily_loss_limit", "max_drawdown", "stop_guard", "cooldown_bars", "lot"}
_GUARD = {"stops", "window", "lock"}

# a name is a partition key of paper_backtest (``month|name``) and a CLI argument: letters, digits, ``_ . / -``,
# no ``..``, at most 64 characters; the controls' specs are named ``NAME:buy_and_hold`` / ``NAME:random_entry``
_NAME = re.compile(r"(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_./-]{0,63}(?::(buy_and_hold|random_entry))?", re.ASCII)
_MAX_DEPTH = 16          # nesting: the spec's own is 4 (rules.signal.min); a deeper value is not a spec
_MAX_TEXT = 10_000       # characters of any one string
_MAX_INT = 1_000_000     # whole-number settings (candles, positions, stop guard): above this is not a setting
CASH_MAX = 1e15          # the starting equity: a quadrillion (above it equity arithmetic loses its cents)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # a description may hold lines and tabs


@dataclass(frozen=True)
class Costs:
    fee_bps: float = 0.0
    spread_bps: float = 0.0
    slippage_bps: float = 0.0
    impact: float = 0.0              # price fraction per unit of participation (quantity ÷ candle volume)
    participation: float | None = None  # at most this fraction of a candle's volume fills (None: no cap)


@dataclass(frozen=True)
class StopGuard:
    stops: int      # this many stop-outs ...
    window: int     # ... within this many candles ...
    lock: int       # ... lock new entries for this many candles


@dataclass(frozen=True)
class Risk:
    position_fraction: float | None = None   # each entry: this fraction of equity
    risk_per_trade: float | None = None      # or: this fraction of equity at risk ÷ the stop distance
    max_symbol_fraction: float = 1.0
    max_total_fraction: float = 1.0          # no leverage by default (above 1: leverage, at most 10)
    max_positions: int | None = None
    daily_loss_limit: float | None = None    # a UTC day's loss beyond this fraction: no entries until the next day
    max_drawdown: float | None = None        # a drawdown beyond this fraction: no entries for the rest of the run
    stop_guard: StopGuard | None = None
    cooldown_bars: int = 0                   # candles after an exit before the same series enters again
    lot: float | None = None                 # quantities are multiples of this (stocks: 1, whole shares)


@dataclass(frozen=True)
class Rules:
    side: str = "long"
    signal: dict | None = None      # {"model", "min", "max"}
    regime: dict | None = None      # {"model", "allow": [...]}
    pump_veto: dict | None = None   # {"model", "threshold"}
    confirm: dict | None = None     # {"table": forecasts|patterns, "model", "min", "max"}
    stop_loss: float | None = None  # fractions of the entry price
    take_profit: float | None = None
    time_exit: int | None = None    # candles held at most


@dataclass(frozen=True)
class Spec:
    name: str
    kind: str
    universe: tuple[tuple[str, str], ...]
    cash: float
    rules: Rules = field(default_factory=Rules)
    costs: Costs = field(default_factory=Costs)
    risk: Risk | None = None
    allow_in_sample: bool = False
    latency_bars: int = 0
    reject_rate: float = 0.0
    description: str = ""
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def version(self) -> str:
        return content_hash(self.raw)

    def models(self) -> list[str]:
        r = self.rules
        return sorted({d["model"] for d in (r.signal, r.regime, r.pump_veto, r.confirm) if d})


def canonical(raw: dict) -> str:
    return json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(raw: dict) -> str:
    """The version of a spec: the first 16 hex digits of the SHA-256 of its canonical JSON (key order and
    whitespace do not make a new version)."""
    return hashlib.sha256(canonical(raw).encode()).hexdigest()[:16]


def _keys(d: Any, allowed: set, path: str) -> dict:
    if not isinstance(d, dict):
        raise InvalidInput(f"{path or 'the spec'} must be a mapping, got {type(d).__name__}", field=path or "spec")
    unknown = sorted(set(d) - allowed)
    if unknown:
        where = f"{path}." if path else ""
        raise InvalidInput(f"unknown key {where}{unknown[0]} (allowed: {', '.join(sorted(allowed))})",
                           field=f"{where}{unknown[0]}")
    return d


def _show(v) -> str:
    """A value as a message quotes it: its repr (control characters and lone surrogates escaped), cut short."""
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _num(d: dict, key: str, path: str, *, lo=None, hi=None, default=None, integer=False, lo_open=False):
    """``d[key]`` as a finite number within its bounds (core/numbers); a whole-number setting is at most
    ``_MAX_INT`` unless ``hi`` says otherwise. A string, even of digits, is not a number here."""
    if key not in d or d[key] is None:
        return default
    v = d[key]
    where = f"{path}.{key}" if path else key
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InvalidInput(f"{where} must be a number, got {_show(v)}", field=where)
    if integer:
        if isinstance(v, float):
            if not (math.isfinite(v) and v.is_integer()):
                raise InvalidInput(f"{where} must be a whole number, got {_show(v)}", field=where)
            v = int(v)
        low = None if lo is None else (int(math.floor(lo)) + 1 if lo_open else int(math.ceil(lo)))
        return numbers.integer(v, where, low=low, high=_MAX_INT if hi is None else hi)
    return numbers.number(v, where, low=None if lo_open else lo, above=lo if lo_open else None, high=hi)


def _model(d: dict, path: str) -> str:
    m = d.get("model")
    if not isinstance(m, str) or not m.strip():
        raise InvalidInput(f"{path}.model must name a registered model", field=f"{path}.model")
    return m.strip()


_LOADER = None


def _loader():
    """PyYAML's safe loader, refusing a key given twice in a mapping (YAML keeps the last, silently), and reading
    exponent numbers as numbers (``1e4``: YAML 1.2 and JSON; YAML 1.1 reads them as text)."""
    global _LOADER
    if _LOADER is None:
        import yaml

        class Loader(yaml.SafeLoader):
            def construct_mapping(self, node, deep=False):
                if isinstance(node, yaml.MappingNode):
                    seen = set()
                    for key_node, _ in node.value:
                        if key_node.tag == "tag:yaml.org,2002:merge":
                            continue
                        key = self.construct_object(key_node, deep=True)
                        try:
                            dup = key in seen
                            seen.add(key)
                        except TypeError:  # an unhashable key: the base class refuses it
                            continue
                        if dup:
                            raise InvalidInput(f"the spec gives the key {_show(key)} twice in one mapping (line "
                                               f"{key_node.start_mark.line + 1}): each key once", field=str(key)[:64])
                return super().construct_mapping(node, deep)

        Loader.add_implicit_resolver(
            "tag:yaml.org,2002:float",
            re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"), list("-+.0123456789"))
        _LOADER = Loader
    return _LOADER


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise InvalidInput(f"the spec gives the key {_show(k)} twice in one object: each key once",
                               field=str(k)[:64])
        out[k] = v
    return out


def _no_constant(name):
    raise InvalidInput(f"the spec holds {name}, which is not a number JSON allows", field="spec")


_DIGITS = "the spec holds a number of more than 4300 digits: not a setting"


_TOO_DEEP = f"the spec nests more than {_MAX_DEPTH} deep: not a spec"


def _check_yaml_depth(text: str) -> None:
    """Refuse YAML nested past ``_MAX_DEPTH`` from its parse events (read iteratively), before the composer, which
    recurses once per level (see ``core.nesting``); and anchors and aliases, which nest and repeat subtrees the
    events do not show."""
    import yaml

    depth = 0
    for event in yaml.parse(text, Loader=_loader()):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            # an alias brings a whole subtree in without its events (a chain of them nests as deep as it likes, a
            # fan of them expands to millions of nodes): a spec writes each value out
            raise InvalidInput("the spec uses a YAML anchor or alias (&name, *name): write each value out",
                               field="spec")
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            if depth > _MAX_DEPTH:
                raise InvalidInput(_TOO_DEEP, field="spec")
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1


def _load(text) -> Any:
    """The mapping of a spec's text: JSON for text that opens with ``{`` (a JSON number like ``1e4`` is a number,
    a ``\\ud83d\\ude00`` pair one character), else YAML; a key given twice is refused either way."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidInput(f"the spec is not UTF-8 text (byte {e.start}: {text[e.start:e.start + 1]!r})",
                               field="spec") from None
    text = text.removeprefix("\ufeff")
    if text.lstrip().startswith("{"):
        if json_depth_exceeds(text, _MAX_DEPTH):
            raise InvalidInput(_TOO_DEEP, field="spec")
        try:
            return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
        except InvalidInput:
            raise
        except RecursionError:
            raise InvalidInput("the spec nests too deeply to read", field="spec") from None
        except json.JSONDecodeError:
            pass  # a YAML flow mapping ({name: x, ...}): read as YAML below
        except ValueError:  # a number of more than 4300 digits
            raise InvalidInput(_DIGITS, field="spec") from None
    import yaml

    try:
        _check_yaml_depth(text)
        return yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise InvalidInput(f"the spec is not valid YAML or JSON: {str(e).splitlines()[0][:200]}",
                           field="spec") from None
    except RecursionError:
        raise InvalidInput("the spec nests too deeply to read", field="spec") from None
    except InvalidInput:
        raise
    except ValueError:  # a number of more than 4300 digits
        raise InvalidInput(_DIGITS, field="spec") from None


def _check_values(raw) -> None:
    """Every value of the raw spec is one JSON holds (a mapping with text keys, a list, text, a number, a truth
    value, null), nested at most ``_MAX_DEPTH`` deep; every string is valid Unicode with no control characters
    (a description may hold newlines and tabs) and at most ``_MAX_TEXT`` characters. Errors name the path."""
    stack = [(raw, "", 0)]
    while stack:
        v, path, depth = stack.pop()
        where = path or "the spec"
        if depth > _MAX_DEPTH:
            raise InvalidInput(f"{where} nests deeper than {_MAX_DEPTH} levels: not a spec", field=path or "spec")
        if isinstance(v, dict):
            items = []
            for k, x in v.items():
                if not isinstance(k, str):
                    raise InvalidInput(f"a key of {where} is not text: {_show(k)}", field=path or "spec")
                if _CONTROL.search(k) or not _encodes(k) or len(k) > 200:
                    raise InvalidInput(f"a key of {where} is not a key a spec has: {_show(k)}", field=path or "spec")
                items.append((x, f"{path}.{k}" if path else k, depth + 1))
            stack += reversed(items)
        elif isinstance(v, (list, tuple)):
            stack += reversed([(x, f"{path}[{i}]", depth + 1) for i, x in enumerate(v)])
        elif isinstance(v, str):
            if not _encodes(v):
                raise InvalidInput(f"{where} is not valid Unicode text (a lone surrogate, such as a \\ud83d escape "
                                   f"without its pair): {_show(v)}", field=path or "spec")
            if (_CONTROL_TEXT if path == "description" else _CONTROL).search(v):
                raise InvalidInput(f"{where} holds a control character (NUL, escape...): {_show(v)}",
                                   field=path or "spec")
            if len(v) > _MAX_TEXT:
                raise InvalidInput(f"{where} is {len(v)} characters long: at most {_MAX_TEXT}", field=path or "spec")
        elif v is not None and not isinstance(v, (bool, int, float)):
            what = _UNHELD.get(type(v).__name__, f"a {type(v).__name__}")
            raise InvalidInput(f"{where} is {what} ({_show(v)}), which a spec cannot hold (JSON has no such value): "
                               "quote it to make it text", field=path or "spec")


_UNHELD = {"date": "a date", "datetime": "a date and time", "bytes": "binary data", "set": "a set"}


def _encodes(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def parse(text_or_dict, stored: bool = False) -> Spec:
    """A spec from YAML or JSON text (or a mapping), every key checked; errors name the path of the bad key.
    ``stored``: a spec read back from the store, whose name an earlier version took (any non-blank text): it
    stays usable; the name rule applies to the strategies added now."""
    raw = text_or_dict
    if isinstance(raw, (str, bytes)):
        raw = _load(raw)
    _check_values(raw)
    d = _keys(raw, _TOP, "")
    name = d.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("name is required: a short name for the strategy", field="name")
    m = _NAME.fullmatch(name.strip())
    if not stored and (not m or (m.group(1) and m.group(1) != d.get("kind"))):
        raise InvalidInput(f"name must be 1 to 64 letters, digits and _ . / - (starting with a letter or digit, no "
                           f"'..'), got {_show(name)}", field="name")
    kind = d.get("kind", "rules")
    if kind not in KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(KINDS)}, got {_show(kind)}", field="kind")
    universe = d.get("universe")
    if not isinstance(universe, list) or not universe:
        raise InvalidInput("universe is required: a list of {symbol, timeframe}", field="universe")
    pairs = []
    for i, u in enumerate(universe):
        u = _keys(u, {"symbol", "timeframe"}, f"universe[{i}]")
        sym, tf = u.get("symbol"), u.get("timeframe")
        if not isinstance(sym, str) or not sym.strip() or not isinstance(tf, str) or not tf.strip():
            raise InvalidInput(f"universe[{i}] needs a symbol and a timeframe", field=f"universe[{i}]")
        from ..core.timeframes import parse_timeframe

        pairs.append((sym.strip(), parse_timeframe(tf, f"universe[{i}].timeframe")))
    if len(set(pairs)) != len(pairs):
        raise InvalidInput("universe names a series twice", field="universe")
    cash = cash_value(d.get("cash"))
    # a section given is checked as one: `costs: 0`, `rules: false` are mistakes, not "none" (null is none)
    rules = _rules(d["rules"] if d.get("rules") is not None else {}, kind)
    costs = _costs(d["costs"] if d.get("costs") is not None else {})
    risk = _risk(d["risk"]) if d.get("risk") is not None else None
    _check_together(rules, risk)
    allow = d.get("allow_in_sample", False)
    if not isinstance(allow, bool):
        raise InvalidInput("allow_in_sample must be true or false", field="allow_in_sample")
    description = d.get("description")
    if description is not None and not isinstance(description, str):
        raise InvalidInput(f"description must be text, got {type(description).__name__} {_show(description)} "
                           "(quote it)", field="description")
    return Spec(name=name.strip(), kind=kind, universe=tuple(pairs), cash=cash, rules=rules, costs=costs, risk=risk,
                allow_in_sample=allow, latency_bars=_num(d, "latency_bars", "", lo=0, default=0, integer=True),
                reject_rate=_num(d, "reject_rate", "", lo=0, hi=0.99, default=0.0),
                description=description or "", raw=json.loads(canonical(d)))


def cash_value(value, field: str = "cash") -> float:
    """The starting equity: a finite number above 0 and at most ``CASH_MAX`` (the spec's ``cash``, and
    ``tp paper start --cash``: plain decimal text there)."""
    if value is None:
        raise InvalidInput(f"{field} is required: the starting equity, above 0", field="cash")
    if field == "cash" and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise InvalidInput(f"cash must be a number, got {_show(value)}", field="cash")
    return numbers.number(value, "cash", field, above=0, high=CASH_MAX)


def _rules(r: dict, kind: str) -> Rules:
    r = _keys(r, _RULES, "rules")
    side = r.get("side", "long")
    if side not in SIDES:
        raise InvalidInput(f"rules.side must be long (long-only), got {_show(side)}", field="rules.side")
    signal = regime = veto = confirm = None
    if r.get("signal") is not None:
        s = _keys(r["signal"], _SIGNAL, "rules.signal")
        signal = {"model": _model(s, "rules.signal"), "min": _num(s, "min", "rules.signal", lo=0, hi=1),
                  "max": _num(s, "max", "rules.signal", lo=0, hi=1)}
        if signal["min"] is None and signal["max"] is None:
            raise InvalidInput("rules.signal needs min or max (a probability in [0, 1])", field="rules.signal.min")
    if r.get("regime") is not None:
        g = _keys(r["regime"], _REGIME, "rules.regime")
        allow = g.get("allow")
        if not isinstance(allow, list) or not allow or any(a not in REGIMES for a in allow):
            raise InvalidInput(f"rules.regime.allow must list regimes among {', '.join(REGIMES)}, got {_show(allow)}",
                               field="rules.regime.allow")
        regime = {"model": _model(g, "rules.regime"), "allow": sorted(set(allow))}
    if r.get("pump_veto") is not None:
        v = _keys(r["pump_veto"], _VETO, "rules.pump_veto")
        veto = {"model": _model(v, "rules.pump_veto"), "threshold": _num(v, "threshold", "rules.pump_veto", lo=0, hi=1)}
        if veto["threshold"] is None:
            raise InvalidInput("rules.pump_veto.threshold is required (in [0, 1])", field="rules.pump_veto.threshold")
    if r.get("confirm") is not None:
        c = _keys(r["confirm"], _CONFIRM, "rules.confirm")
        if c.get("table") not in ("forecasts", "patterns"):
            raise InvalidInput("rules.confirm.table must be forecasts or patterns", field="rules.confirm.table")
        confirm = {"table": c["table"], "model": _model(c, "rules.confirm"),
                   "min": _num(c, "min", "rules.confirm"), "max": _num(c, "max", "rules.confirm")}
    for name, d in (("signal", signal), ("confirm", confirm)):
        if d and d["min"] is not None and d["max"] is not None and d["min"] > d["max"]:
            raise InvalidInput(f"rules.{name}.max ({d['max']:g}) is below rules.{name}.min ({d['min']:g}): the "
                               "rule could never enter", field=f"rules.{name}.max")
    if kind == "rules" and signal is None and regime is None and confirm is None:
        raise InvalidInput("a rules strategy needs an entry rule: rules.signal, rules.regime or rules.confirm",
                           field="rules.signal")
    return Rules(side=side, signal=signal, regime=regime, pump_veto=veto, confirm=confirm,
                 stop_loss=_num(r, "stop_loss", "rules", lo=0, hi=1, lo_open=True),
                 take_profit=_num(r, "take_profit", "rules", lo=0, lo_open=True),
                 time_exit=_num(r, "time_exit", "rules", lo=1, integer=True))


def _costs(c: dict) -> Costs:
    c = _keys(c, _COSTS, "costs")
    return Costs(fee_bps=_num(c, "fee_bps", "costs", lo=0, hi=10_000, default=0.0),
                 spread_bps=_num(c, "spread_bps", "costs", lo=0, hi=10_000, default=0.0),
                 slippage_bps=_num(c, "slippage_bps", "costs", lo=0, hi=10_000, default=0.0),
                 impact=_num(c, "impact", "costs", lo=0, default=0.0),
                 participation=_num(c, "participation", "costs", lo=0, hi=1, lo_open=True))


def _risk(r: dict) -> Risk:
    r = _keys(r, _RISK, "risk")
    guard = None
    if r.get("stop_guard") is not None:
        g = _keys(r["stop_guard"], _GUARD, "risk.stop_guard")
        vals = {k: _num(g, k, "risk.stop_guard", lo=1, integer=True) for k in ("stops", "window", "lock")}
        missing = [k for k, v in vals.items() if v is None]
        if missing:
            raise InvalidInput(f"risk.stop_guard.{missing[0]} is required (a whole number, at least 1)",
                               field=f"risk.stop_guard.{missing[0]}")
        guard = StopGuard(**vals)
    out = Risk(position_fraction=_num(r, "position_fraction", "risk", lo=0, hi=1, lo_open=True),
               risk_per_trade=_num(r, "risk_per_trade", "risk", lo=0, hi=1, lo_open=True),
               max_symbol_fraction=_num(r, "max_symbol_fraction", "risk", lo=0, hi=10, lo_open=True, default=1.0),
               max_total_fraction=_num(r, "max_total_fraction", "risk", lo=0, hi=10, lo_open=True, default=1.0),
               max_positions=_num(r, "max_positions", "risk", lo=1, integer=True),
               daily_loss_limit=_num(r, "daily_loss_limit", "risk", lo=0, hi=1, lo_open=True),
               max_drawdown=_num(r, "max_drawdown", "risk", lo=0, hi=1, lo_open=True),
               stop_guard=guard, cooldown_bars=_num(r, "cooldown_bars", "risk", lo=0, integer=True, default=0),
               lot=_num(r, "lot", "risk", lo=0, lo_open=True))
    if out.position_fraction is not None and out.risk_per_trade is not None:
        raise InvalidInput("risk: give position_fraction or risk_per_trade, not both", field="risk.risk_per_trade")
    return out


def _check_together(rules: Rules, risk: Risk | None) -> None:
    if risk is not None and risk.risk_per_trade is not None and not rules.stop_loss:
        raise InvalidInput("risk.risk_per_trade sizes by the stop's distance: set rules.stop_loss too",
                           field="risk.risk_per_trade")
