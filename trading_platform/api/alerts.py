"""Alert rules and destinations, the alerts made and their statistics, the delivery outbox (``tp alerts``).

Rules and destinations are checked here before they are stored (migration 16 is the contract): a rule names a
known model, symbols and timeframes, a threshold in [0, 1]; a destination names the *environment variables* that
hold its URL, signing secret or bot token, never the values. A value passed where a name belongs is refused
without being repeated, and no result of this module carries the value of a variable a destination names.
Creating, judging and counting alerts is ``trading_platform.alerts.core``; sending them, ``alerts.delivery``.
"""

from __future__ import annotations

import os
import re
import unicodedata
from datetime import date, datetime

from ..core import numbers
from ..errors import InvalidInput
from ..store import alerts as alert_store
from ._context import store_or_open

SIDES = ("above", "below")
KINDS = ("webhook", "telegram")
SEND_MODES = ("alerts_only", "all", "positive_only", "negative_only")
ALERT_STATUSES = ("pending", "success", "failed", "expired", "suppressed")
DELIVERY_STATUSES = ("pending", "sending", "delivered", "dead", "stale")
ENV_FIELDS = ("url_env", "secret_env", "token_env")  # the columns that name environment variables
MOST_ROWS = 10_000
MAX_TEXT = 200  # characters of a name (rule, destination, model, symbol, version)
COOLDOWN_MAX_S = 366 * 86_400  # a rule's cooldown: at most a year
RATE_PER_MIN = (0.01, 60_000.0)  # a destination's messages per minute: one per 100 minutes to 1,000 a second
POLL_S = (0.05, 3_600.0)  # the delivery worker's look when no NOTIFY wakes it
CHAT_ID_MAX = 2**63 - 1  # Telegram chat ids are signed 64-bit integers

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CHAT_ID = re.compile(r"^(-?[0-9]{1,20}|@[A-Za-z][A-Za-z0-9_]{3,62})$")
_SWITCH = {"on": True, "true": True, "yes": True, "1": True, "off": False, "false": False, "no": False, "0": False}


# ---- parsing: every function names the option at fault --------------------------------------------------

def _number(value, field: str, *, low: float | None = None, high: float | None = None,
            above: float | None = None) -> float:
    """Plain decimal text (or a number), finite and within the bounds (``core.numbers``): ``0_1``, Arabic-Indic
    digits, ``nan`` and ``1e400`` are refused, naming the option."""
    return numbers.number(value, field, "--" + field.replace("_", "-"), low=low, high=high, above=above)


def _integer(value, field: str, *, low: int = 1, high: int = MOST_ROWS) -> int:
    return numbers.integer(value, field, "--" + field.replace("_", "-"), low=low, high=high)


def _one_of(value, choices: tuple[str, ...], field: str) -> str:
    v = str(value).strip().lower() if value is not None else ""
    if v not in choices:
        raise InvalidInput(f"--{field.replace('_', '-')} {value!r} is not one of {', '.join(choices)}", field=field)
    return v


def _switch(value, field: str) -> bool:
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v not in _SWITCH:
        raise InvalidInput(f"--{field} {value!r}: use on or off", field=field)
    return _SWITCH[v]


def _names(value, field: str) -> list[str] | None:
    """Comma-separated text or a list; ``all`` is None: every one. A list with no name in it (``''``, ``,,,``)
    is refused: it would silently mean every one."""
    if value is None:
        return None
    raw = value.split(",") if isinstance(value, str) else value
    items = [_clean(str(x).strip(), field) for x in raw if str(x).strip()]
    option = "--" + field.replace("_", "-")
    if not items:
        raise InvalidInput(f"{option} lists nothing ({_show(value)}): give comma-separated names, or all for every "
                           f"one", field=field)
    if [x.lower() for x in items] == ["all"]:
        return None
    return list(dict.fromkeys(items))


def _show(value) -> str:
    """``value`` as an error quotes it: its repr (control characters escaped), at most 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _clean(v: str, field: str) -> str:
    """``v`` when it is a name that can be stored and shown: at most ``MAX_TEXT`` characters, encodable as UTF-8
    (no lone surrogates, which undecodable bytes on a command line become), with no control characters."""
    if len(v) > MAX_TEXT:
        raise InvalidInput(f"{field} is {len(v):,} characters long: at most {MAX_TEXT}", field=field)
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{field} {_show(v)} is not valid text (bytes that are not UTF-8)", field=field) from None
    bad = next((c for c in v if unicodedata.category(c) in ("Cc", "Zl", "Zp")), None)
    if bad is not None:
        raise InvalidInput(f"{field} {_show(v)} contains a control character (U+{ord(bad):04X}): use printable "
                           f"characters", field=field)
    return v


def _text(value, field: str) -> str:
    v = str(value).strip() if value is not None else ""
    if not v:
        raise InvalidInput(f"{field} is empty", field=field)
    return _clean(v, field)


def _looks_like_token(v: str) -> bool:
    """A credential rather than a variable name. Names are taken in the conventional form only: upper-case
    letters, digits and '_' (``N8N_ALERTS_URL``), at most 64 characters; and a run of 16 or more letters and digits
    with digits in it and no '_' (``AKIAIOSFODNN7EXAMPLE``, a hex key) reads as a key, not a name."""
    if len(v) > 64 or not v.isupper() and any(c.isalpha() for c in v):
        return True
    return any(len(part) >= 16 and any(c.isdigit() for c in part) for part in v.split("_"))


def env_name(value, field: str) -> str | None:
    """The name of an environment variable (``WEBHOOK_URL``), or None for nothing. Anything else (a URL, a token,
    text with ``:`` or ``/``) is refused without repeating it: it is the secret itself, which belongs in the
    variable."""
    if value is None or str(value).strip() == "":
        return None
    v = str(value).strip()
    if _ENV_NAME.match(v) and not _looks_like_token(v):
        return v
    option = "--" + field.replace("_", "-")
    raise InvalidInput(
        f"{option} takes the NAME of an environment variable (upper-case letters, digits and '_', such as "
        f"WEBHOOK_URL), not "
        f"its value: what was given looks like a URL, token or secret and is not stored nor shown. Put the value in "
        f"an environment variable of the delivery worker (export WEBHOOK_URL=...) and pass {option} WEBHOOK_URL",
        field=field)


def _check_url_env(name: str | None) -> None:
    """When ``name`` is set here it must hold an http(s) URL; unset is allowed (the destination is misconfigured
    until it is). Neither the URL nor any piece of it is ever quoted."""
    value = os.environ.get(name) if name else None
    if not value or not value.strip():
        return
    from ..alerts.adapters import _is_http_url  # the worker's own test (``alerts.adapters.resolve``)

    if not _is_http_url(value.strip()):
        raise InvalidInput(f"the environment variable {name} (--url-env) does not hold an http(s) URL (its value is "
                           f"not shown); set it to the receiver's http:// or https:// address", field="url_env")


def _check_secret_env(name: str | None) -> None:
    """When ``name`` is set here and holds a ``whsec_`` secret, it must be base64 after the prefix (else every
    signature would be made with an empty key). Its value is never quoted."""
    from ..alerts.adapters import _whsec_key

    value = (os.environ.get(name) or "").strip() if name else ""
    if value.startswith("whsec_") and not _whsec_key(value):
        raise InvalidInput(f"the environment variable {name} (--secret-env) holds a whsec_ secret that is not base64 "
                           f"after its prefix (its value is not shown); set it to whsec_ followed by the base64 key",
                           field="secret_env")


def _time(value, field: str):
    from .market import parse_time

    return parse_time(value, field)


def _jsonable(row: dict) -> dict:
    return {k: (v.isoformat() if isinstance(v, (datetime, date)) else v) for k, v in row.items()}


def _scrubber(conn):
    """A function that masks, in any text of a value (dicts and lists walked), what the variables the destinations
    name hold here (URLs, their paths, tokens, secrets: ``alerts.adapters.Target.secrets``), whether or not the
    destination is complete: a receiver's error may quote its URL."""
    from ..alerts.adapters import Target

    env = os.environ
    targets = [Target(id=i, name=n, kind=k, url=env.get(u or "", ""), secret=env.get(sec or "") or None,
                      token=env.get(tok or "") or None)
               for i, n, k, u, sec, tok in alert_store.destination_env_names(conn)]
    targets = [t for t in targets if t.secrets()]

    def scrub(value):
        if isinstance(value, str):
            for t in targets:
                value = t.scrub(value)
            return value
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [scrub(v) for v in value]
        return value

    return scrub


# ---- what exists: models, symbols, rules, destinations ---------------------------------------------------

def _check_models(conn, names: list[str], field: str, client=None) -> None:
    """Every name is a model the platform knows: one with a champion history or outputs, else one in the MLflow
    registry. The error lists the models that exist."""
    known = alert_store.known_models(conn)
    missing = [m for m in names if m not in known]
    if not missing:
        return
    registry_error = None
    try:
        from ..models.registry import iter_registered_models
        from ._context import mlflow_client

        registered = {m.name for m in iter_registered_models(client or mlflow_client())}
    except Exception as e:  # noqa: BLE001 - an unreachable registry is reported with the unknown name
        registered, registry_error = set(), f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e) else ''}"
    missing = [m for m in missing if m not in registered]
    if not missing:
        return
    exist = sorted(known | registered)
    shown = ", ".join(exist[:30]) + (f" and {len(exist) - 30} more" if len(exist) > 30 else "")
    raise InvalidInput(
        f"unknown model {missing[0]!r}: no champion, output or registered model has that name; "
        + (f"the models are {shown}" if exist else "no model exists yet (train one: tp demo, or materialize a model)")
        + (f" (the MLflow registry could not be read: {registry_error})" if registry_error else ""),
        field=field)


def _check_symbols(conn, names: list[str] | None) -> None:
    if not names:
        return
    have = alert_store.existing_symbols(conn, names)
    for n in names:
        if n not in have:
            raise InvalidInput(f"symbol {n!r} is not in the symbols table (tp symbols list shows them; tp symbols "
                               f"add {n!r} adds it)", field="symbols")


def _check_filters(conn, model: str | None, symbol: str | None) -> None:
    """A filter naming a model or a symbol the platform does not know is an error naming it (as the MCP tools'
    ``faces.tools._model``), not an empty answer."""
    if model is not None:
        _check_models(conn, [model], "model")
    if symbol is not None and not alert_store.existing_symbols(conn, [symbol]):
        raise InvalidInput(f"symbol {symbol!r} is not in the symbols table (tp symbols list shows them)",
                           field="symbol")


def _timeframes(value) -> list[str] | None:
    from ..core.timeframes import parse_timeframe

    names = _names(value, "timeframes")
    return None if names is None else list(dict.fromkeys(parse_timeframe(t, "timeframes") for t in names))


def _rule(conn, name: str, *, live: bool = True) -> dict:
    row = alert_store.get_rule(conn, name)
    if row is None:
        raise InvalidInput(f"no alert rule named {name!r} (tp alerts rules lists them)", field="name")
    row = _jsonable(row)
    if live and row["removed_at"] is not None:
        raise InvalidInput(f"alert rule {name!r} was removed at {row['removed_at']} (its alerts are kept); add a "
                           f"rule under another name", field="name")
    return row


def _destination(conn, name: str, field: str = "name") -> dict:
    row = alert_store.get_destination(conn, name)
    if row is None:
        raise InvalidInput(f"no alert destination named {name!r} (tp alerts destinations lists them)", field=field)
    return _jsonable(row)


# ---- rules -------------------------------------------------------------------------------------------------

def list_rules(*, removed: bool = False, store=None) -> list[dict]:
    """The alert rules (with ``removed``, also the removed ones), by name."""
    with store_or_open(store) as s:
        return [_jsonable(r) for r in alert_store.list_rules(s.conn, removed=removed)]


def _rule_values(*, model=None, symbols=None, timeframes=None, threshold=None, side=None, cooldown=None) -> dict:
    """The settings given (as columns), each parsed and checked on its own; ``symbols`` / ``timeframes`` ``all``:
    every one (None)."""
    out = {}
    if model is not None:
        out["model_name"] = _text(model, "model")
    if threshold is not None:
        out["threshold"] = _number(threshold, "threshold", low=0, high=1)
    if side is not None:
        out["side"] = _one_of(side, SIDES, "side")
    if cooldown is not None:
        out["cooldown_s"] = _number(cooldown, "cooldown", low=0)
        if out["cooldown_s"] > COOLDOWN_MAX_S:
            raise InvalidInput(f"--cooldown must be at most {COOLDOWN_MAX_S} seconds (366 days), got {_show(cooldown)}",
                               field="cooldown")
    if symbols is not None:
        out["symbols"] = _names(symbols, "symbols")
    if timeframes is not None:
        out["timeframes"] = _timeframes(timeframes)
    return out


def _check_rule_names(conn, v: dict, client=None, current: dict | None = None) -> None:
    """The model and symbols of rule settings ``v`` exist, and the rule can fire (``_check_scope``) with them
    (on top of the ``current`` rule's settings, for an update)."""
    if "model_name" in v:
        _check_models(conn, [v["model_name"]], "model", client)
    if v.get("symbols"):
        _check_symbols(conn, v["symbols"])
    if not {"model_name", "symbols", "timeframes"} & v.keys():
        return
    cur = current or {}
    _check_scope(conn, v.get("model_name", cur.get("model")), v["symbols"] if "symbols" in v else cur.get("symbols"),
                 v["timeframes"] if "timeframes" in v else cur.get("timeframes"))


def _model_symbols(model: str, listed: dict[str, list[str]]) -> list[str] | None:
    """The symbols a per-symbol model scores, read from its name (``models.registry.registered_name``:
    ``regime_hmm.BTC_USDT``, ``nhits.1h.BTC_USDT``, ``signal_lgbm.BTC_USDT.lineage``): those of ``listed`` whose
    name part matches a part of the model's name after its family. None when the name names no symbol (a
    cross-symbol model such as ``pump_xgb``: any symbol may be scored by it)."""
    parts = set(model.split(".")[1:])
    if not parts:
        return None
    out = [s for s in listed if "".join(ch if ch.isalnum() else "_" for ch in s).strip("_") in parts]
    return out or None


def _check_scope(conn, model: str | None, symbols: list[str] | None, timeframes: list[str] | None) -> None:
    """A rule that could never fire is refused: a symbol a per-symbol model does not score (``_model_symbols``),
    or a timeframe that none of the symbols it watches lists (its own, else the model's, else every symbol)."""
    listed = {sym: list(tfs or []) for sym, tfs in conn.execute("SELECT symbol, timeframes FROM symbols").fetchall()}
    scope = _model_symbols(model, listed) if model else None
    if symbols and scope is not None:
        for sym in symbols:
            if sym not in scope:
                raise InvalidInput(f"symbol {sym!r} is not scored by model {model!r}: it is a per-symbol model "
                                   f"({', '.join(scope)}); the rule could never fire", field="symbols")
    if not timeframes:
        return
    watched = symbols or scope or sorted(listed)
    if not watched:
        return  # no symbol exists yet: nothing to check against
    for tf in timeframes:
        if not any(tf in listed.get(sym, []) for sym in watched):
            shown = "; ".join(f"{sym}: {', '.join(listed.get(sym, [])) or 'none'}" for sym in watched[:10])
            more = f" and {len(watched) - 10} more" if len(watched) > 10 else ""
            raise InvalidInput(f"timeframe {tf} is not a timeframe of any symbol the rule watches ({shown}{more}); "
                               "the rule could never fire (tp symbols update SYMBOL --timeframes sets the timeframes "
                               "a symbol lists)",
                               field="timeframes")


def add_rule(name: str, *, model: str, threshold, symbols=None, timeframes=None, side="above", cooldown=0,
             enabled: bool = True, store=None, client=None) -> dict:
    """A rule: an output of ``model`` (its champion) on the ``symbols`` and ``timeframes`` (default every one)
    at or beyond ``threshold`` on ``side`` makes an alert, no more often than every ``cooldown`` seconds per
    symbol."""
    name = _text(name, "name")
    if model is None:
        raise InvalidInput("--model is required: the model whose outputs the rule watches", field="model")
    if threshold is None:
        raise InvalidInput("--threshold is required: a number from 0 to 1", field="threshold")
    v = _rule_values(model=model, symbols=symbols, timeframes=timeframes, threshold=threshold,
                     side=side if side is not None else "above", cooldown=cooldown if cooldown is not None else 0)
    with store_or_open(store) as s:
        _check_rule_names(s.conn, v, client)
        rule_id = alert_store.insert_rule(s.conn, name, model_name=v["model_name"], symbols=v.get("symbols"),
                                          timeframes=v.get("timeframes"), threshold=v["threshold"], side=v["side"],
                                          cooldown_s=v["cooldown_s"], enabled=bool(enabled))
        if rule_id is None:
            old = _rule(s.conn, name, live=False)
            held = " by a removed rule (its alerts are kept)" if old["removed_at"] else ""
            raise InvalidInput(f"an alert rule named {name!r} exists{held}; choose another name, or change it with "
                               f"tp alerts rule update", field="name")
        return _rule(s.conn, name)


def update_rule(name: str, *, model=None, threshold=None, symbols=None, timeframes=None, side=None, cooldown=None,
                enabled: bool | None = None, store=None, client=None) -> dict:
    """Change what is given of rule ``name`` (``symbols`` / ``timeframes`` ``all``: every one)."""
    name = _text(name, "name")
    v = _rule_values(model=model, symbols=symbols, timeframes=timeframes, threshold=threshold, side=side,
                     cooldown=cooldown)
    if enabled is not None:
        v["enabled"] = bool(enabled)
    with store_or_open(store) as s:
        current = _rule(s.conn, name)
        _check_rule_names(s.conn, v, client, current)
        alert_store.update_rule(s.conn, name, v)
        return _rule(s.conn, name)


def remove_rule(name: str, *, store=None) -> dict:
    """Retire rule ``name``: it makes no more alerts; the ones it made stay (they may have been sent)."""
    name = _text(name, "name")
    with store_or_open(store) as s:
        _rule(s.conn, name)
        alert_store.retire_rule(s.conn, name)
        alerts = alert_store.count_rule_alerts(s.conn, name)
        return {**_rule(s.conn, name, live=False), "alerts_kept": alerts}


# ---- destinations ------------------------------------------------------------------------------------------

def _destination_values(*, kind=None, url_env=None, secret_env=None, token_env=None, chat_id=None, send_mode=None,
                        resolutions=None, retractions=None, models=None, rate_per_min=None, watchdog=None,
                        paper=None) -> dict:
    """The settings given, each parsed and checked on its own; '' clears a variable, the chat or the rate, and ``all``
    the models (an empty list is refused)."""
    out = {}
    if kind is not None:
        out["kind"] = _one_of(kind, KINDS, "kind")
    for field, value in (("url_env", url_env), ("secret_env", secret_env), ("token_env", token_env)):
        if value is not None:
            out[field] = env_name(value, field)
    if chat_id is not None:
        c = str(chat_id).strip()
        if c and (not _CHAT_ID.match(c) or c[0] != "@" and abs(int(c)) > CHAT_ID_MAX):
            raise InvalidInput(f"--chat-id {_show(c)} is not a Telegram chat id (a 64-bit number such as "
                               f"-1001234567890, or @channelname)", field="chat_id")
        out["chat_id"] = c or None
    if send_mode is not None:
        out["send_mode"] = _one_of(send_mode, SEND_MODES, "send_mode")
    if resolutions is not None:
        out["resolutions"] = _switch(resolutions, "resolutions")
    if retractions is not None:
        out["retractions"] = _switch(retractions, "retractions")
    if watchdog is not None:
        out["watchdog"] = _switch(watchdog, "watchdog")
    if paper is not None:
        out["paper"] = _switch(paper, "paper")
    if models is not None:
        out["models"] = _names(models, "models")
    if rate_per_min is not None:
        out["rate_per_min"] = (None if str(rate_per_min).strip() == ""
                               else _number(rate_per_min, "rate_per_min", low=RATE_PER_MIN[0],
                                            high=RATE_PER_MIN[1]))
    return out


def _check_destination(d: dict) -> None:
    """What the destination's kind asks for, on the settings as they will be stored."""
    if d["kind"] == "webhook":
        if not d.get("url_env"):
            raise InvalidInput("a webhook destination needs --url-env: the name of the environment variable holding "
                               "its URL", field="url_env")
        for field in ("token_env", "chat_id"):
            if d.get(field):
                raise InvalidInput(f"--{field.replace('_', '-')} is for telegram destinations, not webhooks",
                                   field=field)
    else:
        if not d.get("token_env"):
            raise InvalidInput("a telegram destination needs --token-env: the name of the environment variable "
                               "holding the bot token", field="token_env")
        if not d.get("chat_id"):
            raise InvalidInput("a telegram destination needs --chat-id: the chat its messages go to",
                               field="chat_id")
        for field in ("url_env", "secret_env"):
            if d.get(field):
                raise InvalidInput(f"--{field.replace('_', '-')} is for webhook destinations, not telegram",
                                   field=field)
    _check_url_env(d.get("url_env"))
    _check_secret_env(d.get("secret_env"))


def _with_state(conn, rows: list[dict]) -> list[dict]:
    """The destination rows, each with what ``alerts.delivery.destination_status`` says of it (``state``: ok,
    misconfigured, with the ``unset`` variable and the ``reason``, or disabled; its deliveries by status, the last
    error); what a variable they name holds masked wherever it would show."""
    from ..alerts.delivery import destination_status

    states = {st["name"]: st for st in destination_status(conn)}
    scrub = _scrubber(conn)
    return [scrub(_jsonable({**d, **{k: v for k, v in states.get(d["name"], {}).items() if k not in d}}))
            for d in rows]


def add_destination(name: str, *, kind: str, url_env=None, secret_env=None, token_env=None, chat_id=None,
                    send_mode="alerts_only", resolutions=False, retractions=False, models=None, rate_per_min=None,
                    watchdog=False, paper=False, enabled: bool = True, store=None, client=None) -> dict:
    """A webhook (``url_env``, optional ``secret_env`` to sign) or a Telegram chat (``token_env``, ``chat_id``)
    that alerts go to. Variables may be unset now: the destination is then ``misconfigured`` (``unset`` names the
    variable) until they are set where the delivery worker runs."""
    name = _text(name, "name")
    if kind is None:
        raise InvalidInput(f"--kind is required: one of {', '.join(KINDS)}", field="kind")
    v = _destination_values(kind=kind, url_env=url_env, secret_env=secret_env, token_env=token_env, chat_id=chat_id,
                            send_mode=send_mode if send_mode is not None else "alerts_only",
                            resolutions=resolutions if resolutions is not None else False,
                            retractions=retractions if retractions is not None else False, models=models,
                            rate_per_min=rate_per_min, watchdog=watchdog if watchdog is not None else False,
                            paper=paper if paper is not None else False)
    _check_destination(v)
    with store_or_open(store) as s:
        if v.get("models"):
            _check_models(s.conn, v["models"], "models", client)
        if alert_store.insert_destination(s.conn, name, v, enabled=bool(enabled)) is None:
            raise InvalidInput(f"an alert destination named {name!r} exists; choose another name, or change it with "
                               f"tp alerts destination update", field="name")
        return _with_state(s.conn, [_destination(s.conn, name)])[0]


def update_destination(name: str, *, kind=None, url_env=None, secret_env=None, token_env=None, chat_id=None,
                       send_mode=None, resolutions=None, retractions=None, models=None, rate_per_min=None,
                       watchdog=None, paper=None, enabled: bool | None = None, store=None, client=None) -> dict:
    """Change what is given of destination ``name``; the result must still be complete for its kind."""
    name = _text(name, "name")
    v = _destination_values(kind=kind, url_env=url_env, secret_env=secret_env, token_env=token_env, chat_id=chat_id,
                            send_mode=send_mode, resolutions=resolutions, retractions=retractions, models=models,
                            rate_per_min=rate_per_min, watchdog=watchdog, paper=paper)
    if enabled is not None:
        v["enabled"] = bool(enabled)
    with store_or_open(store) as s:
        current = _destination(s.conn, name)
        _check_destination({**current, **v})
        if v.get("models"):
            _check_models(s.conn, v["models"], "models", client)
        alert_store.update_destination(s.conn, name, v)
        return _with_state(s.conn, [_destination(s.conn, name)])[0]


def remove_destination(name: str, *, store=None) -> dict:
    """Delete destination ``name`` and its outbox rows (those not yet sent are dropped)."""
    name = _text(name, "name")
    with store_or_open(store) as s, s.conn.transaction():
        d = _destination(s.conn, name)
        n, undelivered = alert_store.delete_destination(s.conn, d["id"])
    return {"removed": name, "deliveries_deleted": n, "undelivered_dropped": undelivered}


def list_destinations(*, store=None) -> list[dict]:
    """The destinations, by name, with their state and deliveries by status (``alerts.delivery``): the names of
    the variables they read, never the values."""
    with store_or_open(store) as s:
        return _with_state(s.conn, [_jsonable(r) for r in alert_store.list_destinations(s.conn)])


# ---- alerts, statistics, deliveries -----------------------------------------------------------------------

def list_alerts(*, model=None, symbol=None, status=None, retracted: bool = False, limit=50, store=None) -> list[dict]:
    """The newest ``limit`` alerts (by when their output was known), filtered by model, symbol, status, or only the
    retracted ones."""
    limit = _integer(limit, "limit")
    model = None if model is None else _text(model, "model")
    symbol = None if symbol is None else _text(symbol, "symbol")
    status = None if status is None else _one_of(status, ALERT_STATUSES, "status")
    with store_or_open(store) as s:
        _check_filters(s.conn, model, symbol)
        rows = alert_store.list_alerts(s.conn, model=model, symbol=symbol, status=status,
                                       retracted=bool(retracted), limit=limit)
        return [_jsonable(r) for r in rows]


def stats(*, model=None, version=None, symbol=None, timeframe=None, since=None, until=None,
          store=None) -> list[dict]:
    """Alert statistics per model, version, symbol and timeframe (``alerts.core.stats``: hit rate with its
    interval, base rate and lift) over the days of the alerts' candles from ``since`` to ``until``."""
    start, end = (None if t is None else t.date() for t in (_time(since, "since"), _time(until, "until")))
    if start is not None and end is not None and end < start:
        raise InvalidInput(f"--until {until!r} is before --since {since!r}", field="until")
    model, version, symbol = (None if v is None else _text(v, f) for v, f in
                              ((model, "model"), (version, "version"), (symbol, "symbol")))
    if timeframe is not None:
        from ..core.timeframes import parse_timeframe

        timeframe = parse_timeframe(timeframe)
    from ..alerts import core

    with store_or_open(store) as s:
        _check_filters(s.conn, model, symbol)
        rows = core.stats(s.conn, model=model, version=version, symbol=symbol, timeframe=timeframe, since=start,
                          until=end)
    return [_jsonable(dict(r)) for r in rows]


def deliveries(*, status=None, destination=None, limit=50, store=None) -> dict:
    """The newest ``limit`` rows of the delivery outbox (filtered by status or destination) and the outbox's
    summary (``alerts.delivery.status``)."""
    limit = _integer(limit, "limit")
    status = None if status is None else _one_of(status, DELIVERY_STATUSES, "status")
    with store_or_open(store) as s:
        destination_id = None
        if destination is not None:
            destination_id = _destination(s.conn, _text(destination, "destination"), "destination")["id"]
        from ..alerts import delivery

        rows = [_jsonable(r) for r in alert_store.list_deliveries(s.conn, status=status,
                                                                  destination_id=destination_id, limit=limit)]
        return _scrubber(s.conn)({"deliveries": rows, "summary": delivery.status(s.conn)})


def retry(*, ids=None, destination=None, store=None) -> dict:
    """Dead deliveries due again now, from attempt zero: those of ``ids``, of ``destination``, or every one."""
    id_list = None
    if ids:
        id_list = [_integer(x, "id", high=2**63 - 1) for i in ([ids] if isinstance(ids, (str, int)) else ids)
                   for x in str(i).split(",")]
    with store_or_open(store) as s:
        name = None
        if destination is not None:
            name = _destination(s.conn, _text(destination, "destination"), "destination")["name"]
        from ..alerts import delivery

        return {"retried": delivery.retry(s.conn, ids=id_list, destination=name)}


def send_test(name: str, *, store=None) -> dict:
    """Send a test message to destination ``name`` now; what its receiver answered (``ok`` false: it refused or
    could not be reached)."""
    name = _text(name, "name")
    with store_or_open(store) as s:
        _destination(s.conn, name)
        from ..alerts import delivery

        return delivery.send_test(s.conn, name)


def deliver(*, poll_s=1.0, dsn: str | None = None) -> dict:
    """Run the delivery worker (``alerts.delivery.run_worker``) until SIGINT or SIGTERM: it claims due deliveries
    and sends them, woken by NOTIFY or every ``poll_s`` seconds. Returns its counts."""
    poll = _number(poll_s, "poll_s", low=POLL_S[0], high=POLL_S[1])
    from ..alerts.delivery import run_worker
    from ..store.runtime import database_url
    from ._context import stopped_by_signals

    with stopped_by_signals() as stop:
        return _jsonable(dict(run_worker(dsn or database_url(), stop=stop, poll_s=poll)))
