"""The MCP server over the tool layer (``faces/tools.py``), with the official SDK's ``MCPServer`` (``mcp`` 2.x).

Each tool is registered with its schema (from the function's types), its annotations (reads: ``readOnlyHint``,
``idempotentHint``, ``openWorldHint: false``; writes only with ``allow_writes``) and its output schema (the
result ``TypedDict``). A bad argument, an unknown symbol or a lost store is a tool execution error
(``isError``, per SEP-1303) whose structured content is ``{"error", "field"}``, so the model can correct itself;
every result and error goes through ``redact_secrets``.
"""

from __future__ import annotations

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


def call(t: registry.Tool, pool, kwargs: dict) -> tuple[bool, dict]:
    """Run tool ``t``: (is_error, the structured result or ``{"error", "field"}``), every text redacted."""
    from ..api._context import lost_store

    try:
        if t.write:
            out = t.fn(**kwargs)
        else:
            with pool.store() as s:
                out = t.fn(**kwargs, store=s)
        out = registry.cut(out)
        return False, json.loads(redact_secrets(json.dumps(out, default=str)))
    except PlatformError as e:
        return True, {"error": redact_secrets(e.message), "field": e.field}
    except Exception as e:  # noqa: BLE001 - a tool never crashes the server
        lost = lost_store(e)
        if lost is not None:
            return True, {"error": lost.message.split(" in the middle")[0], "field": lost.field}
        log.exception("tool %s failed", t.name)
        return True, {"error": redact_secrets(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"),
                      "field": None}


def _annotations(t: registry.Tool):
    from mcp.types import ToolAnnotations

    if t.write:
        return ToolAnnotations(read_only_hint=False, destructive_hint=t.destructive, idempotent_hint=False,
                               open_world_hint=False)
    return ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)


def _adapt(t: registry.Tool, pool):
    """A function with ``t``'s parameters (``store`` aside) returning ``Annotated[CallToolResult, <result type>]``:
    the SDK derives the input and output schemas from it."""
    from mcp.types import CallToolResult, TextContent

    hints = typing.get_type_hints(t.fn, include_extras=True)
    sig = inspect.signature(t.fn)
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY if p.kind == p.KEYWORD_ONLY else p.kind,
                        annotation=hints.get(p.name, p.annotation))
              for p in sig.parameters.values() if p.name != "store"]
    ret = Annotated[CallToolResult, hints["return"]]

    def handler(**kwargs):
        is_error, body = call(t, pool, kwargs)
        text = body["error"] if is_error else json.dumps(body, default=str)
        return CallToolResult(is_error=is_error, content=[TextContent(type="text", text=text)],
                              structured_content=body)

    handler.__name__ = t.name
    handler.__doc__ = t.fn.__doc__
    handler.__signature__ = sig.replace(parameters=params, return_annotation=ret)
    handler.__annotations__ = {**{p.name: p.annotation for p in params}, "return": ret}
    return handler


def build(allow_writes: bool = False, pool=None):
    """The ``MCPServer`` with the read tools (and the write tools with ``allow_writes``)."""
    from mcp.server.mcpserver import MCPServer

    from .. import __version__
    from .reads import ReadPool

    pool = pool or ReadPool()
    server = MCPServer(name="trading_platform", instructions=INSTRUCTIONS, version=__version__, log_level="WARNING")
    for t in registry.tools(allow_writes):
        server.add_tool(_adapt(t, pool), name=t.name, description=t.description, annotations=_annotations(t))
    server.pool = pool
    return server
