"""The forecast-vs-actual plot: for a few series, the closes around the last scored windows,
each window's median forecast and its 10-90 % band (matplotlib, Agg)."""

from __future__ import annotations

import numpy as np

from .baselines import Windows


def forecast_plot(w: Windows, series: list, path: str, title: str, *, max_series: int = 4, last_windows: int = 4,
                  history_rows: int = 96) -> str:
    """``series``: the ``frames.Series`` the windows come from (for the history before each window)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {s.symbol: s for s in series}
    symbols = [s for s in dict.fromkeys(w.symbol.tolist()) if s in by][:max_series]
    fig, axes = plt.subplots(len(symbols), 1, figsize=(10, 2.6 * len(symbols)), squeeze=False)
    h = w.actual.shape[1]
    for ax, sym in zip(axes[:, 0], symbols):
        s = by[sym]
        idx = np.flatnonzero(w.symbol == sym)
        idx = idx[np.argsort(w.origin_row[idx])][-last_windows:]
        first, last = int(w.origin_row[idx[0]]) - history_rows, int(w.origin_row[idx[-1]]) + h
        rows = np.arange(max(first, 0), min(last, len(s) - 1) + 1)
        t = s.ts_us.astype("datetime64[us]")
        ax.plot(t[rows], s.close[rows], color="black", lw=0.8, label="close")
        for j, i in enumerate(idx):
            steps = int(w.origin_row[i]) + np.arange(1, h + 1)
            ax.fill_between(t[steps], w.q(0.1)[i], w.q(0.9)[i], color="tab:blue", alpha=0.2,
                            label="10-90 % band" if j == 0 else None)
            ax.plot(t[steps], w.median[i], color="tab:blue", lw=1.2, label="median forecast" if j == 0 else None)
            ax.axvline(t[int(w.origin_row[i])], color="grey", lw=0.5, ls=":")
        ax.set_title(f"{sym}: last {len(idx)} held-out windows", fontsize=9)
        ax.legend(loc="upper left", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
