"""Which indicators to compute, with which windows: configuration as data.

A spec is validated when it is built: an unknown indicator or a non-positive
window fails with the field named (``features.rsi``, ...).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from ..errors import InvalidInput


# the indicators whose items are tuples: how many numbers each takes (the others take one window per item)
ARITY = {"macd": 3, "bbands": 2, "stoch": 2}
ARITY_TEXT = {"macd": "[fast, slow, signal]", "bbands": "[window, standard deviations]",
              "stoch": "[window, smoothing]"}


@dataclass(frozen=True)
class FeatureSpec:
    returns: tuple[int, ...] = (1, 5, 15, 60)          # ret_N, logret_N
    volatility: tuple[int, ...] = (20, 60)             # vol_N: std of 1-bar log returns
    sma: tuple[int, ...] = (10, 20, 50, 200)           # sma_N, dist_sma_N
    ema: tuple[int, ...] = (10, 20, 50, 200)           # ema_N, dist_ema_N
    rsi: tuple[int, ...] = (14,)                       # rsi_N (Wilder)
    macd: tuple[tuple[int, int, int], ...] = ((12, 26, 9),)
    bbands: tuple[tuple[int, float], ...] = ((20, 2.0),)
    atr: tuple[int, ...] = (14,)                       # atr_N (Wilder)
    stoch: tuple[tuple[int, int], ...] = ((14, 3),)    # stoch_k_N_S, stoch_d_N_S (slow %K, %D; SMA S)
    vwap: tuple[int, ...] = (20,)                      # vwap_N, dist_vwap_N
    volume_z: tuple[int, ...] = (20,)                  # volume_z_N
    volume_spike: tuple[int, ...] = (48,)              # volume_spike_N: volume / trailing median of N
    change: tuple[int, ...] = (12,)                    # change_N: close over N bars ago - 1
    max_rise: tuple[int, ...] = (12,)                  # max_rise_N: largest low-to-later-high rise in N bars
    obv: bool = True
    ath: bool = True                                   # ath, ath_dist, bars_since_ath
    candle: bool = True                                # hl_range, body, upper_wick, lower_wick
    context: tuple[str, ...] = ("rsi_14", "macd_hist_12_26_9", "bb_pctb_20_2", "atr_14", "ret_1", "dist_ema_20")

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "context":
                bad = [c for c in value if not isinstance(c, str) or not c.strip()]
                if bad:
                    raise InvalidInput(f"features.context: {bad[0]!r} is not a feature column name",
                                       field="features.context")
                continue
            if isinstance(value, bool):
                continue
            arity = ARITY.get(f.name)
            for item in value:
                params = item if isinstance(item, tuple) else (item,)
                if (arity or 1) != len(params) or (arity is None) == isinstance(item, tuple):
                    raise InvalidInput(f"features.{f.name}: {list(params) if isinstance(item, tuple) else item!r} "
                                       f"must be {ARITY_TEXT.get(f.name, 'one window')}", field=f"features.{f.name}")
                for p in params:
                    if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or p <= 0:
                        raise InvalidInput(f"features.{f.name}: window {p!r} must be a positive number",
                                           field=f"features.{f.name}")
                if isinstance(item, tuple) and f.name == "macd" and not item[0] < item[1]:
                    raise InvalidInput(f"features.macd: fast {item[0]} must be shorter than slow {item[1]}",
                                       field="features.macd")

    @classmethod
    def from_dict(cls, d: dict | None) -> "FeatureSpec":
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InvalidInput(f"unknown indicator(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}",
                               field=f"features.{unknown[0]}")
        out = {}
        for k, v in d.items():
            if isinstance(v, bool) or k == "context":
                out[k] = tuple(v) if k == "context" else v
                continue
            if not isinstance(v, (list, tuple)):
                raise InvalidInput(f"features.{k}: expected a list of windows, got {v!r}", field=f"features.{k}")
            out[k] = tuple(tuple(x) if isinstance(x, (list, tuple)) else x for x in v)
        return cls(**out)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def max_window(self) -> int:
        """The longest look-back of any windowed feature (bars)."""
        w = [1]
        for name in ("returns", "volatility", "sma", "vwap", "volume_z", "change"):
            w += [int(x) + 1 for x in getattr(self, name)]
        w += [int(n) + 1 for n in self.volume_spike]
        w += [2 * int(n) for n in self.max_rise]
        w += [int(n) for n, _ in self.bbands]
        w += [int(n) + 2 * int(s) for n, s in self.stoch]
        return max(w)
