"""How deeply a JSON text nests, found without recursing.

``json.loads`` and PyYAML's composer recurse once per level of nesting, so a hostile text of 100,000 ``[`` runs
them to Python's recursion limit. They do raise ``RecursionError``, but at that depth the garbage collector may
run finalizers of unrelated objects, which then fail with ``RecursionError`` of their own and are reported as
"unraisable" noise (a test run under pytest fails on them). Checking the depth first, iteratively, refuses such a
text before any parser goes deep.
"""
from __future__ import annotations

import re

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"?', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def json_depth_exceeds(text: str, limit: int) -> bool:
    """True when the brackets of ``text`` (outside its double-quoted strings) open more than ``limit`` deep at
    some point. Made for JSON; for text that is not JSON it still answers for its brackets."""
    depth = 0
    for c in _NOT_BRACKET.sub("", _STRING.sub("", text)):
        if c in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth = max(depth - 1, 0)
    return False
