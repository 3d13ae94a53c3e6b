"""How one message reaches a destination: signed webhooks and Telegram chats, over the standard library's HTTP.

A destination row names environment variables, never secrets (migration 16): ``url_env`` (a webhook's URL),
``secret_env`` (its signing secret, optional), ``token_env`` (a Telegram bot's token). ``resolve`` reads them
from this process's environment into a ``Target`` whose secret fields never show in its ``repr``; a variable
unset makes the destination misconfigured (``Misconfigured`` names the variable, never a value).

Webhooks get the payload as one flat JSON object, ``webhook-id`` and ``Idempotency-Key`` headers carrying the
delivery's key (the same on every attempt: a receiver drops what it has seen), and, when the destination names a
secret, a Standard Webhooks signature (https://www.standardwebhooks.com): ``webhook-timestamp`` (Unix seconds)
and ``webhook-signature: v1,<base64 HMAC-SHA256(secret, "<id>.<timestamp>.<body>")>``, a ``whsec_`` secret
being base64 after its prefix. ``verify`` is the receiver's side. Telegram gets ``sendMessage`` with one HTML
line per alert (``alert_line``; a digest packs many lines into messages of at most 4,096 characters,
``pack_lines``).

``post`` sends one request and ``classify`` says what the answer means for the delivery: delivered (2xx),
retry later (408, 425, 429, 5xx, a timeout, a refused or reset connection, an answer that is not HTTP or, from
Telegram, not its JSON; ``retry_after_s`` from ``Retry-After`` or Telegram's ``parameters.retry_after``), or
dead (any other status: the receiver will not take it however often it is sent). Every error text is scrubbed
of the destination's URL, path segments, token and secret and passed through ``redact_secrets``: a webhook's
path (n8n's ``/webhook/<id>``) and a bot token are credentials.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import html
import http.client
import json
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Mapping

from ..errors import redact_secrets

TELEGRAM_API = "https://api.telegram.org"  # TP_TELEGRAM_API_URL overrides it (a local Bot API server, tests)
TELEGRAM_MAX_CHARS = 4096  # a message's text, at most
BODY_EXCERPT = 300  # characters of a receiver's answer kept in an error
USER_AGENT = "trading-platform-alerts/1"
_PLAIN_SEGMENTS = {"webhook", "webhook-test", "webhooks", "hooks", "services", "alerts", "sendmessage"}
N8N_HINT = ("n8n answers 404 while its workflow is inactive: activate the workflow, or use its production URL "
            "rather than its test URL, which only listens while the editor waits for a test event")


# ---- destinations ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Misconfigured:
    """Why a destination cannot be sent to from this process: ``field`` is the column at fault (``url_env``,
    ``token_env``, ``secret_env``, ``chat_id``) and ``variable`` the environment variable it names, if any."""

    field: str
    variable: str | None
    reason: str


@dataclass(frozen=True)
class Target:
    """A destination with its secrets read from the environment. The secret fields stay out of ``repr``."""

    id: int
    name: str
    kind: str
    chat_id: str | None = None
    rate_per_min: float | None = None
    url: str = field(default="", repr=False)
    secret: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    def secrets(self) -> list[str]:
        """The strings no error, log line or report may quote: the URL, its path and its longer path segments
        and query values, the token, the secret."""
        out = [s for s in (self.url, self.secret, self.token) if s]
        if self.url:
            try:
                parts = urllib.parse.urlsplit(self.url)
                password = parts.password or ""
            except ValueError:  # not a URL (an unclosed '[' of an IPv6 host): mask its pieces all the same
                parts = urllib.parse.SplitResult("", "", self.url.split("//", 1)[-1], "", "")
                password = ""
            out += [parts.path, parts.query, password]
            out += [seg for seg in parts.path.split("/") if len(seg) >= 6 and seg.lower() not in _PLAIN_SEGMENTS]
            out += [v for _, v in urllib.parse.parse_qsl(parts.query) if len(v) >= 4]
        if self.token:
            out.append(self.token.split(":", 1)[-1])
        return sorted({s for s in out if s and len(s) >= 4}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        """``text`` with this destination's secrets (and any other secret ``redact_secrets`` knows) masked."""
        for s in self.secrets():
            text = text.replace(s, "***")
        return redact_secrets(text)

    @property
    def limiter_keys(self) -> list[tuple]:
        """The rate limits this destination shares with others: Telegram limits a bot per chat and overall
        (keys hold a hash of the token, never the token)."""
        if self.kind != "telegram":
            return [("webhook", self.id)]
        bot = hashlib.sha256((self.token or "").encode()).hexdigest()[:16]
        return [("chat", bot, str(self.chat_id)), ("bot", bot)]


def env_variables(dest: Mapping) -> list[tuple[str, str]]:
    """(column, variable name) of the variables a destination row needs set, in the order they are checked."""
    cols = ["url_env"] if dest["kind"] == "webhook" else ["token_env"]
    if dest.get("secret_env"):
        cols.append("secret_env")
    return [(c, dest.get(c)) for c in cols]


def resolve(dest: Mapping, environ: Mapping[str, str] | None = None) -> Target | Misconfigured:
    """The destination row (``alert_destinations`` columns) with its variables read from ``environ`` (the
    process environment by default), or why it cannot be sent to."""
    env = os.environ if environ is None else environ
    values = {}
    for col, var in env_variables(dest):
        if not var:
            return Misconfigured(col, None, f"{col} is not set on the destination: name the environment "
                                            f"variable that holds the {_what(col)}")
        value = env.get(var, "").strip()
        if not value:
            return Misconfigured(col, var, f"environment variable {var} ({col}: the {_what(col)}) is not set "
                                           "where the delivery worker runs")
        values[col] = value
    if dest["kind"] == "webhook":
        if not _is_http_url(values["url_env"]):
            return Misconfigured("url_env", dest["url_env"], f"environment variable {dest['url_env']} does not "
                                                             "hold an http(s) URL (its value is not shown)")
    else:
        if any(c.isspace() or not c.isprintable() for c in values["token_env"]) or "/" in values["token_env"]:
            return Misconfigured("token_env", dest["token_env"],
                                 f"environment variable {dest['token_env']} does not hold a Telegram bot token "
                                 "(it has spaces, control characters or '/'; its value is not shown)")
        if not dest.get("chat_id"):
            return Misconfigured("chat_id", None, "chat_id is not set on the destination (the chat the bot posts to)")
    if values.get("secret_env", "").startswith("whsec_") and not _whsec_key(values["secret_env"]):
        return Misconfigured("secret_env", dest["secret_env"],
                             f"environment variable {dest['secret_env']} holds a whsec_ signing secret that is not "
                             "base64 after its prefix (or is empty): no signature could be checked (its value is "
                             "not shown)")
    return Target(id=int(dest["id"]), name=dest["name"], kind=dest["kind"], chat_id=dest.get("chat_id"),
                  rate_per_min=dest.get("rate_per_min"), url=values.get("url_env", ""),
                  secret=values.get("secret_env"), token=values.get("token_env"))


def _is_http_url(value: str) -> bool:
    """An http(s) URL with a host (and a valid port, if any), free of spaces and control characters: what
    ``post`` can send to. Never raises (``urlsplit`` raises ValueError on ``http://[::1/x``)."""
    if any(c.isspace() or not c.isprintable() for c in value):
        return False
    try:
        parts = urllib.parse.urlsplit(value)
        _ = parts.port  # ValueError: not a number, or out of range
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        return False


def _whsec_key(secret: str) -> bytes | None:
    """The key of a ``whsec_`` secret (strict base64 after the prefix, not empty), or None."""
    try:
        key = base64.b64decode(secret[len("whsec_"):], validate=True)
    except ValueError:  # binascii.Error: bad characters or padding
        return None
    return key or None


def _what(col: str) -> str:
    return {"url_env": "webhook URL", "token_env": "Telegram bot token", "secret_env": "signing secret"}[col]


# ---- Standard Webhooks signatures -----------------------------------------------------------------------------
def _key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_"):])
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int | str, body: bytes) -> str:
    """The ``webhook-signature`` header value: ``v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>``; a
    ``whsec_`` secret is base64 after its prefix, any other secret's UTF-8 bytes are the key."""
    mac = hmac.new(_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def verify(secret: str, headers: Mapping, body: bytes, *, tolerance_s: float = 300.0,
           now: float | None = None) -> bool:
    """Whether ``headers`` (any mapping; names case-insensitive) sign ``body`` with ``secret``: one of the
    space-separated ``v1,`` signatures matches and the timestamp is within ``tolerance_s`` of ``now``."""
    h = {str(k).lower(): v for k, v in headers.items()}
    msg_id, ts, sigs = h.get("webhook-id"), h.get("webhook-timestamp"), h.get("webhook-signature")
    if not (msg_id and ts and sigs):
        return False
    try:
        if abs((time.time() if now is None else now) - int(ts)) > tolerance_s:
            return False
    except ValueError:
        return False
    expected = sign(secret, msg_id, ts, body)
    return any(hmac.compare_digest(expected, s) for s in sigs.split() if s.startswith("v1,"))


# ---- requests -------------------------------------------------------------------------------------------------
@dataclass
class Request:
    url: str = field(repr=False)
    headers: dict = field(repr=False)
    body: bytes = field(repr=False)


def json_body(payload: Mapping) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def webhook_request(target: Target, msg_id: str, payload: Mapping, *, now: float | None = None) -> Request:
    """POST of the payload as it is, keyed by ``msg_id`` (and signed when the destination has a secret)."""
    body = json_body(payload)
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, "webhook-id": msg_id,
               "Idempotency-Key": msg_id}
    if target.secret:
        ts = int(time.time() if now is None else now)
        headers["webhook-timestamp"] = str(ts)
        headers["webhook-signature"] = sign(target.secret, msg_id, ts, body)
    url = target.url
    parts = urllib.parse.urlsplit(url)
    if parts.username is not None:  # https://user:password@host/...: basic authentication, not part of the host
        creds = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(creds.encode()).decode()
        url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    return Request(url, headers, body)


def telegram_api() -> str:
    return (os.environ.get("TP_TELEGRAM_API_URL") or TELEGRAM_API).rstrip("/")


def telegram_request(target: Target, text: str) -> Request:
    """``sendMessage`` of ``text`` (HTML) to the destination's chat."""
    body = json_body({"chat_id": target.chat_id, "text": text, "parse_mode": "HTML",
                      "disable_web_page_preview": True})
    return Request(f"{telegram_api()}/bot{target.token}/sendMessage",
                   {"Content-Type": "application/json", "User-Agent": USER_AGENT}, body)


def _num(v, fmt: str) -> str | None:
    try:
        return format(float(v), fmt)
    except (TypeError, ValueError):
        return None


def alert_line(payload: Mapping, limit: int = 600) -> str:
    """One readable HTML line for a message: what happened, the alert's id, model and version, symbol and timeframe, the
    probability against the rule's threshold, the price, the outcome once resolved, the hit rate."""
    p = payload
    kind = str(p.get("type") or "alert")
    head = {"alert": "ALERT", "alert_resolved": "RESOLVED", "alert_retracted": "RETRACTED",
            "test": "TEST"}.get(kind, kind.upper())
    if kind == "test":
        return f"<b>TEST</b> {html.escape(str(p.get('text') or 'test message'))[:limit]}"
    if kind == "paper":  # a live paper run's order event (trading_platform/paper/live.py)
        text = str(p.get("message") or "")
        if len(text) > limit:
            text = text[:limit - 1] + "…"
        return f"<b>PAPER {html.escape(str(p.get('event') or '').upper())}</b> {html.escape(text, quote=False)}"
    if kind in ("watchdog", "watchdog_resolved"):  # the watchdog's own line (trading_platform/watchdog/engine.py)
        head = "RECOVERED" if kind == "watchdog_resolved" else "REMINDER" if p.get("reminder") else "DOWN"
        text = str(p.get("message") or p.get("check") or "")
        if len(text) > limit:
            text = text[:limit - 1] + "…"
        return f"<b>WATCHDOG {head}</b> {html.escape(text, quote=False)}"
    parts = []
    series = " ".join(str(x) for x in (p.get("symbol"), p.get("timeframe")) if x)
    model = str(p.get("model") or "")
    if p.get("model_version") not in (None, ""):
        model += f" v{p['model_version']}"
    prob, thr = _num(p.get("probability"), ".2f"), _num(p.get("threshold"), ".2f")
    if prob is not None:
        op = "≤" if p.get("side") == "below" else "≥"
        parts.append(f"p {prob} {op} {thr}" if thr is not None else f"p {prob}")
    price = _num(p.get("price"), ",.8g")
    if price is not None:
        parts.append(f"price {price}")
    if kind == "alert_resolved":
        parts.append(f"outcome {p.get('outcome') or p.get('status') or '?'}")
    rate = _num(p.get("hit_rate"), ".0%")
    if rate is not None:
        n = p.get("hit_rate_n")
        parts.append(f"hit rate {rate}" + (f" of {n}" if n not in (None, "") else ""))
    ref = f"#{p['alert_id']} " if p.get("alert_id") not in (None, "") else ""  # `tp alerts list` shows the id
    text = ref + " · ".join([f"{series} {model}".strip(), *parts])
    if len(text) > limit:
        text = text[:limit - 1] + "…"
    return f"<b>{head}</b> {html.escape(text, quote=False)}"


def text_length(text: str) -> int:
    """A text's length as Telegram counts it (UTF-16 code units: never less than ``len``)."""
    return len(text.encode("utf-16-le")) // 2


def pack_lines(lines: list[str], limit: int = TELEGRAM_MAX_CHARS) -> list[list[int]]:
    """Indexes of ``lines`` grouped into messages: a header line (``digest_header``) and as many lines as fit
    in ``limit`` characters, in order."""
    out: list[list[int]] = []
    cur: list[int] = []
    size = 0
    header = text_length(digest_header(len(lines))) + 1  # the header never grows past this many characters
    for i, line in enumerate(lines):
        n = text_length(line) + 1
        if cur and header + size + n > limit:
            out.append(cur)
            cur, size = [], 0
        cur.append(i)
        size += n
    if cur:
        out.append(cur)
    return out


def digest_header(n: int) -> str:
    return f"<b>{n} alerts</b>"


def digest_text(lines: list[str]) -> str:
    return "\n".join([digest_header(len(lines)), *lines])


# ---- sending and what the answer means ------------------------------------------------------------------------
@dataclass
class Result:
    """What one request came to: ``ok`` (delivered), else ``retry`` (send again later, not before
    ``retry_after_s`` when the receiver asked) or dead; ``error`` is scrubbed of every secret."""

    ok: bool
    status: int | None = None
    retry: bool = False
    retry_after_s: float | None = None
    error: str | None = None
    elapsed_s: float = 0.0


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # a POST is never re-sent elsewhere
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def post(req: Request, timeout_s: float) -> tuple[int, Mapping, bytes]:
    """(status, headers, first 64 KiB of the body) of one POST; raises OSError / http.client.HTTPException
    when no HTTP answer came (refused, reset, timed out, not HTTP)."""
    r = urllib.request.Request(req.url, data=req.body, headers=req.headers, method="POST")
    try:
        with _OPENER.open(r, timeout=timeout_s) as resp:
            return resp.status, resp.headers, resp.read(65536)
    except urllib.error.HTTPError as e:
        try:
            body = e.read(65536)
        except (OSError, http.client.HTTPException):
            body = b""
        finally:
            e.close()
        return e.code, e.headers or {}, body


def retry_after(headers: Mapping, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (a number of seconds or an HTTP date), or None."""
    value = (headers.get("Retry-After") if headers else None) or ""
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def _excerpt(body: bytes) -> str:
    return " ".join(body.decode("utf-8", "replace").split())[:BODY_EXCERPT]


def _transport_error(e: BaseException, timeout_s: float) -> str:
    reason = getattr(e, "reason", None) if isinstance(e, urllib.error.URLError) else e
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return f"no answer within {timeout_s:g} s (timed out)"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError)):
        return "connection closed or reset before an answer"
    if isinstance(reason, http.client.HTTPException):
        return f"the answer is not HTTP ({type(reason).__name__})"
    return f"{type(reason).__name__}: {reason}"


def send(target: Target, req: Request, timeout_s: float) -> Result:
    """Send ``req`` to the destination and classify the answer (``classify``)."""
    t0 = time.monotonic()
    try:
        status, headers, body = post(req, timeout_s)
    except (OSError, http.client.HTTPException, ValueError) as e:
        return Result(False, None, retry=True, error=target.scrub(_transport_error(e, timeout_s)),
                      elapsed_s=time.monotonic() - t0)
    out = classify(target, status, headers, body)
    out.elapsed_s = time.monotonic() - t0
    return out


def classify(target: Target, status: int, headers: Mapping, body: bytes) -> Result:
    """What an HTTP answer means for the delivery (see the module's doc)."""
    tg = _telegram_json(body) if target.kind == "telegram" else None
    if 200 <= status < 300:
        if target.kind == "telegram" and not (isinstance(tg, dict) and tg.get("ok") is True):
            return Result(False, status, retry=True,
                          error=target.scrub(f"HTTP {status} but not Telegram's answer: {_excerpt(body)}"))
        return Result(True, status)
    wait = retry_after(headers)
    if isinstance(tg, dict) and isinstance(tg.get("parameters"), dict):
        ra = tg["parameters"].get("retry_after")
        if isinstance(ra, (int, float)):
            wait = max(wait or 0.0, float(ra))
    what = (str(tg.get("description")) if isinstance(tg, dict) and tg.get("description") else _excerpt(body))
    error = target.scrub(f"HTTP {status}" + (f": {what[:BODY_EXCERPT]}" if what else ""))
    if status in (408, 425, 429) or status >= 500:
        return Result(False, status, retry=True, retry_after_s=wait, error=error)
    if 300 <= status < 400:
        error += " (a redirect: a POST is not followed; give the final URL)"
    elif target.kind == "webhook" and status == 404:
        error += f" ({N8N_HINT})"
    elif target.kind == "telegram":
        error += _telegram_hint(target, status, tg)
    return Result(False, status, retry=False, error=error)


def _telegram_json(body: bytes):
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def _telegram_hint(target: Target, status: int, tg) -> str:
    params = tg.get("parameters") if isinstance(tg, dict) else None
    if isinstance(params, dict) and params.get("migrate_to_chat_id"):
        return f" (the group is now a supergroup: set the destination's chat_id to {params['migrate_to_chat_id']})"
    if status == 401:
        return " (the bot token was rejected: check the variable named by token_env)"
    if status == 403:
        return f" (the bot may not post to chat {target.chat_id}: blocked, removed from the group, or never started)"
    if status == 400 and isinstance(tg, dict) and "chat not found" in str(tg.get("description", "")).lower():
        return f" (chat {target.chat_id} not found: message the bot first, or check chat_id)"
    return ""
