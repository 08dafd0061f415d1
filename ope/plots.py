"""SVG plots for the report (matplotlib, Agg backend): embedded inline, no network needed."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402

__all__ = ["forest_plot", "time_plot", "METRIC_LABELS"]

METRIC_LABELS = {
    "cost_usd": "cost per request (USD)",
    "success": "success rate",
    "satisfaction": "satisfaction",
    "ttft_ms": "TTFT (ms)",
    "latency_ms": "latency (ms)",
    "throughput_tps": "throughput (tokens/s)",
    "sla_hit": "SLA hit rate",
}
plt.rcParams.update({"font.size": 9, "svg.fonttype": "none", "axes.spines.top": False, "axes.spines.right": False})


def _svg(fig: plt.Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def forest_plot(relative: pl.DataFrame, metrics: list[str]) -> str:
    """Relative change vs the baseline (%) with intervals, one panel per metric, one row per policy."""
    policies = relative["policy"].unique(maintain_order=True).to_list()
    cols = 4
    rows = (len(metrics) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(11, 0.45 * len(policies) * rows + 1.2 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        sub = relative.filter(pl.col("metric") == metric)
        for y, name in enumerate(policies):
            r = sub.filter(pl.col("policy") == name)
            if r.height:
                v, lo, hi = r["value"][0], r["ci_low"][0], r["ci_high"][0]
                ax.errorbar([v], [y], xerr=[[v - lo], [hi - v]], fmt="o", color="#1f5f99", capsize=3, ms=4)
        ax.axvline(0, color="#999", lw=0.8)
        ax.set_yticks(range(len(policies)), policies if ax in axes[:, 0] else [""] * len(policies))
        ax.set_title(METRIC_LABELS.get(metric, metric), fontsize=9)
        ax.set_xlabel("change vs baseline (%)")
        ax.invert_yaxis()
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.tight_layout()
    return _svg(fig)


def time_plot(slices: pl.DataFrame, metrics: list[str]) -> str:
    """Per-period estimates of each policy with intervals: how service quality moves over time."""
    cols = 4
    rows = (len(metrics) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(11, 2.3 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        sub = slices.filter(pl.col("metric") == metric)
        for name in sub["policy"].unique(maintain_order=True).to_list():
            r = sub.filter(pl.col("policy") == name).sort("period")
            x = r["period"].to_list()
            ax.plot(x, r["value"].to_list(), marker=".", lw=1, label=name)
            ax.fill_between(x, r["ci_low"].to_list(), r["ci_high"].to_list(), alpha=0.15)
        ax.set_title(METRIC_LABELS.get(metric, metric), fontsize=9)
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower right", fontsize=8, frameon=False)
    fig.tight_layout()
    return _svg(fig)
