"""PNG of a ``bench serve`` result: throughput and latency against concurrency (matplotlib, optional)."""

from __future__ import annotations

from typing import Any


def require_matplotlib() -> None:
    """Raises ValueError when matplotlib is missing (it is only needed for ``--plot``)."""
    try:
        import matplotlib  # noqa: F401  (only the import is checked)
    except ImportError as e:
        raise ValueError("--plot needs matplotlib: pip install matplotlib") from e


def plot_serve(result: dict[str, Any], path: str) -> None:
    """Two panels over the concurrency levels (log2 axis): output tokens/s and requests/s on the
    left; TTFT p50/p99 and TPOT p50/p99 in milliseconds on the right. Written as PNG to ``path``.

    Raises:
        ValueError: matplotlib is not installed, or the result has no levels.
    """
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    levels = result.get("levels") or []
    if not levels:
        raise ValueError("nothing to plot: the serve result has no concurrency levels")
    conc = [lv["concurrency"] for lv in levels]
    fig, (ax_t, ax_l) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax_t.plot(conc, [lv["output_tokens_per_s"] for lv in levels], "o-", label="output tokens/s")
    ax_t.set_xlabel("concurrency")
    ax_t.set_ylabel("output tokens/s")
    ax_r = ax_t.twinx()
    ax_r.plot(conc, [lv["requests_per_s"] for lv in levels], "s--", color="tab:orange", label="requests/s")
    ax_r.set_ylabel("requests/s")
    ax_t.set_title("throughput")
    handles = ax_t.get_legend_handles_labels()[0] + ax_r.get_legend_handles_labels()[0]
    ax_t.legend(handles, [h.get_label() for h in handles], loc="upper left")
    for key, marker, color in (("ttft_ms", "o", "tab:blue"), ("tpot_ms", "s", "tab:green")):
        for q, ls in (("p50", "-"), ("p99", ":")):
            ys = [lv[key][q] if lv[key][q] is not None else float("nan") for lv in levels]
            ax_l.plot(conc, ys, marker=marker, linestyle=ls, color=color, label=f"{key.split('_')[0].upper()} {q}")
    ax_l.set_xlabel("concurrency")
    ax_l.set_ylabel("milliseconds")
    ax_l.set_title("latency")
    ax_l.legend(loc="upper left")
    for ax in (ax_t, ax_l):
        if len(set(conc)) > 1:
            ax.set_xscale("log", base=2)
        ax.set_xticks(conc, [str(c) for c in conc])
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"gfx906-llm bench serve: {result.get('model')}, {result.get('output_len')} output tokens")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
