"""The MCP server over the tool layer (``faces/tools.py``), with the official SDK's ``MCPServer`` (``mcp`` 2.x).

Each tool is registered with its schema (from the function's types), its annotations (reads: ``readOnlyHint``,
``idempotentHint``, ``openWorldHint: false``; writes only with ``allow_writes``) and its output schema (the
result ``TypedDict``). A bad argument, an unknown symbol or a lost store is a tool execution error
(``isError``, per SEP-1303) whose structured content is ``{"error", "field"}``, so the model can correct itself;
every result and error goes through ``redact_secrets``.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import typing
from typing import Annotated

from ..errors import PlatformError, redact_secrets
from . import tools as registry

log = logging.getLogger(__name__)

INSTRUCTIONS = (
    "Tools over a market-data and ML platform: managed symbols and their OHLCV candles, features, the models' "
    "predictions, forecasts and chart patterns (today's champions by default; as_of for what was known at a time), "
    "the knowledge base, the model registry, alerts, paper trading, and whether the live path and the pipeline keep "
    "up. Times are ISO 8601 UTC; a candle's ts is its open time. Lists take a limit with a maximum; a bad argument "
    "comes back as an error naming its field.")


def call(t: registry.Tool, pool, kwargs: dict, face: str = "mcp-stdio", client: str | None = None
         ) -> tuple[bool, dict]:
    """Run tool ``t``: (is_error, the structured result or ``{"error", "field"}``), every text redacted. A write
    tool's call is recorded in ``api_audit`` (``face``, ``client``: a token's hash or an address)."""
    import time

    from .metrics import REQUESTS

    t0 = time.perf_counter()
    is_error, body = _call(t, pool, kwargs)
    elapsed = time.perf_counter() - t0
    REQUESTS.observe(face, t.name, "error" if is_error else "ok", elapsed)
    if t.write:
        audit(face, client, t.name, kwargs, not is_error, body, elapsed * 1000)
    return is_error, body


@functools.lru_cache(maxsize=1)
def writer_role() -> str | None:
    """``tp_api_writer`` when the login may take it (migration 21), else None (said once): the write tools then
    write as the login. Decided on the first write."""
    from ..api._context import open_store

    role = "tp_api_writer"
    try:
        with open_store() as s:
            s.conn.execute(f"SET ROLE {role}")
    except Exception as e:  # noqa: BLE001 - no such role, or not a member
        log.warning("the write tools write as the platform's login, not %s (%s)", role,
                    redact_secrets(str(e).splitlines()[0] if str(e) else type(e).__name__))
        return None
    return role


def _nul_argument(kwargs: dict) -> str | None:
    """The first argument holding a NUL character (PostgreSQL's text cannot), in a string or a list of them."""
    for name, value in kwargs.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, str) and "\x00" in v for v in values):
            return name
    return None


def _call(t: registry.Tool, pool, kwargs: dict) -> tuple[bool, dict]:
    from ..api._context import as_role, lost_store

    nul = _nul_argument(kwargs)
    if nul is not None:  # refused here for every tool: it reached the database as a DataError naming no field
        return True, {"error": f"{nul} contains a NUL character", "field": nul}
    try:
        if t.write:
            with as_role(writer_role()):
                out = t.fn(**kwargs)
        else:
            with pool.store() as s:
                out = t.fn(**kwargs, store=s)
        return False, registry.redact_tree(registry.cut(out))
    except PlatformError as e:
        return True, {"error": redact_secrets(e.message), "field": e.field}
    except Exception as e:  # noqa: BLE001 - a tool never crashes the server
        lost = lost_store(e)
        if lost is not None:
            return True, {"error": lost.message.split(" in the middle")[0], "field": lost.field}
        log.exception("tool %s failed", t.name)
        # the server's fault, not the request's: the HTTP face answers 500 (``internal``), not 422
        return True, {"error": redact_secrets(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"),
                      "field": None, "internal": True}


def audit(face: str, client: str | None, tool: str, arguments: dict, ok: bool, result: dict, ms: float) -> None:
    """One ``api_audit`` row for a write tool's call (arguments and result redacted); a store that cannot take it
    is logged, the call's answer stands."""
    from psycopg.types.json import Jsonb

    from ..api._context import as_role, open_store

    try:
        with as_role(writer_role()), open_store() as s:
            s.conn.execute("INSERT INTO api_audit (face, client, tool, arguments, ok, result, elapsed_ms) VALUES "
                           "(%s, %s, %s, %s, %s, %s, %s)",
                           (face, client, tool, Jsonb(json.loads(redact_secrets(json.dumps(arguments, default=str)))),
                            ok, Jsonb(result), ms))
    except Exception as e:  # noqa: BLE001
        log.warning("api_audit: the call of %s was not recorded (%s)", tool, redact_secrets(str(e)))


def _annotations(t: registry.Tool):
    from mcp.types import ToolAnnotations

    if t.write:
        return ToolAnnotations(read_only_hint=False, destructive_hint=t.destructive, idempotent_hint=False,
                               open_world_hint=False)
    return ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)


def _refused(t: registry.Tool, access, ctx) -> dict | None:
    """Over HTTP (``tp serve``): the write token for a write tool, and the client's rate limit; None when the call
    may go on (always over stdio, where the user who launched the server is the client)."""
    request = _request(ctx)
    if access is None or request is None:
        return None
    from .http import client_key

    auth = request.headers.get("authorization")
    if t.write:
        denied = access.check(auth, write=True)
        if denied is not None:
            return {"error": denied[1], "field": "Authorization"}
    wait = access.take(client_key(auth, request.client.host if request.client else None), write=t.write)
    if wait is not None:
        return {"error": f"rate limited: try again in {wait:.1f} s", "field": None, "retry_after_s": round(wait, 1)}
    return None


def _request(ctx):
    if ctx is None:
        return None
    try:
        return ctx.request_context.request
    except ValueError:
        return None


def _who(ctx) -> tuple[str, str | None]:
    """(face, client) of a call: over HTTP the client is its token's hash or its address."""
    request = _request(ctx)
    if request is None:
        return "mcp-stdio", None
    from .http import client_key

    return "mcp-http", client_key(request.headers.get("authorization"), request.client.host if request.client else None)


def _adapt(t: registry.Tool, pool, access=None):
    """A function with ``t``'s parameters (``store`` aside, the SDK's ``Context`` added) returning
    ``Annotated[CallToolResult, <result type>]``: the SDK derives the input and output schemas from it."""
    from mcp.server.mcpserver import Context
    from mcp.types import CallToolResult, TextContent

    hints = typing.get_type_hints(t.fn, include_extras=True)
    sig = inspect.signature(t.fn)
    params = [p.replace(annotation=hints.get(p.name, p.annotation))
              for p in sig.parameters.values() if p.name != "store"]
    params.append(inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Context))
    ret = Annotated[CallToolResult, hints["return"]]

    def handler(ctx=None, **kwargs):
        refused = _refused(t, access, ctx)
        face, client = _who(ctx)
        if refused is not None:
            from .metrics import REQUESTS

            REQUESTS.observe(face, t.name, "refused", 0.0)
            is_error, body = True, refused
            if t.write:  # a write refused (token, rate) is a call too
                audit(face, client, t.name, kwargs, False, refused, 0.0)
        else:
            is_error, body = call(t, pool, kwargs, face, client)
        text = body["error"] if is_error else json.dumps(body, default=str)
        return CallToolResult(is_error=is_error, content=[TextContent(type="text", text=text)],
                              structured_content=body)

    handler.__name__ = t.name
    handler.__doc__ = t.fn.__doc__
    handler.__signature__ = sig.replace(parameters=params, return_annotation=ret)
    handler.__annotations__ = {**{p.name: p.annotation for p in params}, "return": ret}
    return handler


def argument_error(exc: BaseException) -> dict | None:
    """``{"error", "field"}`` for arguments the SDK's schema validation refused (the wrong type, a required one
    missing): the SDK's ``ToolError`` caused by a pydantic ``ValidationError``; None for anything else."""
    from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
    from pydantic import ValidationError

    if not isinstance(exc, ToolError) or isinstance(exc, UnexpectedToolError):
        return None
    cause = exc.__cause__
    if not isinstance(cause, ValidationError) or not cause.errors():
        return None
    first = cause.errors()[0]
    field = ".".join(str(p) for p in first.get("loc", ())) or None
    return {"error": f"{field}: {first.get('msg', 'invalid')}" if field else str(first.get("msg")), "field": field}


def _json_types(schema: dict) -> set[str]:
    """The JSON types a property's schema takes (``type``, or the types of its ``anyOf`` / ``oneOf``)."""
    t = schema.get("type")
    types = set(t if isinstance(t, list) else [t] if t else [])
    for branch in (*schema.get("anyOf", ()), *schema.get("oneOf", ())):
        types |= _json_types(branch)
    return types


def boolean_for_number(parameters: dict, arguments) -> dict | None:
    """``{"error", "field"}`` for a boolean given where the schema takes a number and no boolean: pydantic's lax
    mode would read ``true`` as 1 (``"limit": true`` asked for one row)."""
    props = (parameters or {}).get("properties", {})
    for key, value in (arguments or {}).items():
        if not isinstance(value, bool) or key not in props:
            continue
        types = _json_types(props[key])
        if "boolean" not in types and types & {"integer", "number"}:
            return {"error": f"{key}: a number, not {str(value).lower()}", "field": key}
    return None


def _server_class(base):
    """``MCPServer`` whose tool calls answer refused arguments as every other bad argument: a tool error with
    ``{"error", "field"}`` (the SDK answered pydantic's text, no structured content)."""
    from mcp.types import CallToolResult, TextContent

    def refused(body):
        return CallToolResult(is_error=True, content=[TextContent(type="text", text=body["error"])],
                              structured_content=body)

    class PlatformMCPServer(base):
        async def call_tool(self, name, arguments, context=None):
            tool = self._tool_manager.get_tool(name)
            body = boolean_for_number(tool.parameters, arguments) if tool is not None else None
            if body is not None:
                return refused(body)
            try:
                return await super().call_tool(name, arguments, context)
            except Exception as exc:
                body = argument_error(exc)
                if body is None:
                    raise
                return refused(body)

    return PlatformMCPServer


def build(allow_writes: bool = False, pool=None, access=None):
    """The ``MCPServer`` with the read tools (and the write tools with ``allow_writes``); ``access``
    (``faces.http.Access``) over HTTP."""
    from mcp.server.mcpserver import MCPServer

    from .. import __version__
    from .reads import ReadPool

    pool = pool or ReadPool()
    server = _server_class(MCPServer)(name="trading_platform", instructions=INSTRUCTIONS, version=__version__,
                                      log_level="WARNING")
    for t in registry.tools(allow_writes):
        server.add_tool(_adapt(t, pool, access), name=t.name, description=t.description,
                        annotations=_annotations(t))
    server.pool = pool
    return server
