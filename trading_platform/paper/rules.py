"""A spec's rules on the models' outputs at one candle's close: enter or not, and why not.

Each rule reads one output of the candle (``Output``: its value, label and whether the version had seen the
candle in training): ``signal`` enters when the probability is within [min, max]; ``regime`` when the label is
one the spec allows; ``pump_veto`` refuses an entry while the pump model fires (value ≥ its threshold);
``confirm`` (a forecast or pattern) when its value is within [min, max]. A missing or NaN output places no order
(``missing_output``), and so does an in-sample one unless the spec allows it (``in_sample``): both are counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .engine import Signal
from .spec import Spec

RULES = ("signal", "regime", "pump_veto", "confirm")


@dataclass(frozen=True)
class Output:
    value: float | None
    label: str | None = None
    in_sample: bool = False


def _missing(o: Output | None) -> bool:
    return o is None or o.value is None or (isinstance(o.value, float) and math.isnan(o.value))


def _within(v: float, lo: float | None, hi: float | None) -> bool:
    return (lo is None or v >= lo) and (hi is None or v <= hi)


def decide(spec: Spec, outputs: dict[str, Output | None]) -> Signal:
    """The rules strategy's decision at one close from its outputs (keys: the rules the spec names)."""
    r = spec.rules
    wanted = {name: getattr(r, name) for name in RULES if getattr(r, name)}
    for name in wanted:
        o = outputs.get(name)
        if _missing(o):
            return Signal(False, "missing_output")
        if o.in_sample and not spec.allow_in_sample:
            return Signal(False, "in_sample")
    if r.signal and not _within(outputs["signal"].value, r.signal["min"], r.signal["max"]):
        return Signal(False, "below_threshold")
    if r.regime and outputs["regime"].label not in r.regime["allow"]:
        return Signal(False, "regime")
    if r.pump_veto and outputs["pump_veto"].value >= r.pump_veto["threshold"]:
        return Signal(False, "pump_veto")
    if r.confirm and not _within(outputs["confirm"].value, r.confirm["min"], r.confirm["max"]):
        return Signal(False, "not_confirmed")
    score = outputs["signal"].value if r.signal else None
    return Signal(True, "", score)
