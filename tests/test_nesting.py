"""``core.nesting.json_depth_exceeds``: the depth of a JSON text, found without recursing, must be the depth
``json.loads`` would recurse to: brackets inside strings (escaped quotes included) do not count, so a spec or
cursor that holds them is not refused, and none that nests deeper slips through."""

import json
import random

from trading_platform.core.nesting import json_depth_exceeds


def _depth(v) -> int:
    if isinstance(v, dict):
        return 1 + max(map(_depth, v.values()), default=0)
    if isinstance(v, list):
        return 1 + max(map(_depth, v), default=0)
    return 0


def _value(rng, depth):
    tricky = ['[', ']', '{"a": [', '\\"[[', '\\\\', '"', 'x\\u005b', '}}}']
    if depth == 0 or rng.random() < 0.3:
        return rng.choice([1, None, True, "".join(rng.choice(tricky) for _ in range(rng.randint(0, 4)))])
    if rng.random() < 0.5:
        return [_value(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    return {"".join(rng.choice(tricky) for _ in range(rng.randint(0, 3))) + str(i): _value(rng, depth - 1)
            for i in range(rng.randint(0, 3))}


def test_the_depth_is_the_one_json_reads_whatever_the_strings_hold():
    rng = random.Random(5)
    for _ in range(2000):
        v = _value(rng, rng.randint(0, 8))
        text, d = json.dumps(v), _depth(v)
        assert not json_depth_exceeds(text, d), text
        if d:
            assert json_depth_exceeds(text, d - 1), text


def test_a_text_deeper_than_python_can_read_is_told_at_once():
    assert json_depth_exceeds("[" * 100_000, 16) and json_depth_exceeds('{"a": ' + "[" * 100_000, 16)
    assert not json_depth_exceeds('{"a": "' + "[" * 100_000 + '"}', 1)  # all of it inside one string
