"""SVG plots for the report (matplotlib, Agg backend): embedded inline, no network needed."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from ope.data.schema import LOWER_IS_BETTER  # noqa: E402

__all__ = ["METRIC_LABELS", "cdf_plot", "forest_plot", "pareto_plot", "time_plot"]

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


def _colour(value: float, low: float, high: float, metric: str) -> str:
    """Green: better and significant; red: worse and significant; grey: not distinguishable from 0."""
    if low <= 0 <= high:
        return "#8c959f"
    return "#1a7f37" if (value < 0) == (metric in LOWER_IS_BETTER) else "#cf222e"


def forest_plot(relative: pl.DataFrame, metrics: list[str]) -> str:
    """Relative change vs the baseline (%) with intervals, one panel per metric, one row per policy."""
    policies = relative["policy"].unique(maintain_order=True).to_list()
    cols = 4
    rows = (len(metrics) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(12, (0.45 * len(policies) + 1.4) * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        sub = relative.filter(pl.col("metric") == metric)
        for y, name in enumerate(policies):
            r = sub.filter(pl.col("policy") == name)
            if r.height and r["value"][0] is not None and np.isfinite(r["value"][0]):
                v, lo, hi = r["value"][0], r["ci_low"][0], r["ci_high"][0]
                ax.errorbar([v], [y], xerr=[[v - lo], [hi - v]], fmt="o", color=_colour(v, lo, hi, metric), capsize=3, ms=5)
        left, right = ax.get_xlim()
        ax.set_xlim(min(left, -0.05 * (right - left)), max(right, 0.05 * (right - left)))
        ax.axvline(0, color="#57606a", lw=0.9)
        ax.set_yticks(range(len(policies)), policies if ax in axes[:, 0] else [""] * len(policies))
        better = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
        by = f" · {sub['estimator'][0]}" if sub.height and "estimator" in sub.columns else ""
        ax.set_title(f"{METRIC_LABELS.get(metric, metric)}{by}\n({better})", fontsize=9)
        ax.set_xlabel("relative change vs baseline (%)", fontsize=8)
        ax.set_ylim(len(policies) - 0.5, -0.5)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.tight_layout()
    return _svg(fig)


def _hourly(frame: pl.DataFrame) -> bool:
    periods = frame["period"].unique().sort()
    return periods.len() > 1 and (periods[1] - periods[0]).total_seconds() < 86_400


def time_plot(slices: pl.DataFrame, metrics: list[str]) -> str:
    """Per-period estimates of each policy with intervals: how service quality moves over time."""
    cols = 4
    rows = (len(metrics) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(12, 2.5 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        sub = slices.filter(pl.col("metric") == metric)
        for name in sub["policy"].unique(maintain_order=True).to_list():
            r = sub.filter(pl.col("policy") == name).sort("period")
            x = r["period"].to_list()
            ax.plot(x, r["value"].to_list(), marker=".", lw=1, label=name)
            ax.fill_between(x, r["ci_low"].to_list(), r["ci_high"].to_list(), alpha=0.15)
        ax.set_title(METRIC_LABELS.get(metric, metric), fontsize=9)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%b %d\n%H:%M" if _hourly(sub) else "%b %d"))
        ax.tick_params(axis="x", labelsize=7)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 5), fontsize=9, frameon=False,
                   bbox_to_anchor=(0.5, 1.04))
    fig.tight_layout()
    return _svg(fig)


def pareto_plot(points: pl.DataFrame, targets: dict[str, float]) -> str:
    """Cost against SLA hit rate and against satisfaction for every swept setting, with intervals.

    ``points`` has one row per setting and the baseline: ``label, status`` ("safe", "unsafe",
    "baseline"), ``recommended`` and ``pareto`` flags, and ``<metric>``, ``<metric>_lo``,
    ``<metric>_hi`` for cost_usd, sla_hit and satisfaction. Cost is shown per 1,000 requests.
    """
    style = {"safe": ("#1a7f37", "o"), "unsafe": ("#bc4c00", "o"), "baseline": ("#24292f", "D")}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, metric in zip(axes, ("sla_hit", "satisfaction"), strict=True):
        for status, (colour, marker) in style.items():
            sub = points.filter(pl.col("status") == status)
            if not sub.height:
                continue
            x, y = sub["cost_usd"].to_numpy() * 1e3, sub[metric].to_numpy()
            xerr = np.abs(np.vstack([x - sub["cost_usd_lo"].to_numpy() * 1e3, sub["cost_usd_hi"].to_numpy() * 1e3 - x]))
            yerr = np.abs(np.vstack([y - sub[f"{metric}_lo"].to_numpy(), sub[f"{metric}_hi"].to_numpy() - y]))
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt=marker, color=colour, ecolor=colour, alpha=0.85, capsize=2,
                        ms=5, lw=0.8, label={"safe": "safe setting", "unsafe": "fails a target", "baseline": "baseline"}[status])
        front = points.filter(pl.col("pareto")).sort("cost_usd")
        if front.height > 1:
            ax.plot(front["cost_usd"].to_numpy() * 1e3, front[metric].to_numpy(), color="#0969da", lw=1, alpha=0.6,
                    label="Pareto frontier")
        best = points.filter(pl.col("recommended"))
        if best.height:
            ax.plot(best["cost_usd"].to_numpy() * 1e3, best[metric].to_numpy(), marker="*", ms=16, color="#0969da",
                    ls="none", label="recommended")
        key = "min_sla_hit" if metric == "sla_hit" else "min_satisfaction"
        if key in targets:
            ax.axhline(targets[key], color="#cf222e", ls="--", lw=0.9, label="rollout target")
        if "max_cost_usd" in targets:
            ax.axvline(targets["max_cost_usd"] * 1e3, color="#cf222e", ls=":", lw=0.9, label="cost cap")
        ax.set_xlabel("cost per 1,000 requests (USD)")
        ax.set_ylabel(METRIC_LABELS[metric])
        ax.set_title(f"cost vs {METRIC_LABELS[metric]}", fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 6), fontsize=8, frameon=False, bbox_to_anchor=(0.5, 1.06))
    fig.tight_layout()
    return _svg(fig)


def cdf_plot(cdfs: pl.DataFrame, metrics: list[str]) -> str:
    """One panel per metric: each policy's estimated CDF (one line) with its simultaneous band, on a log axis."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 2.9), squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=True):
        sub = cdfs.filter((pl.col("metric") == metric) & (pl.col("threshold") > 0))
        for name in sub["policy"].unique(maintain_order=True).to_list():
            r = sub.filter(pl.col("policy") == name).sort("threshold")
            x = r["threshold"].to_numpy()
            ax.plot(x, r["cdf"].to_numpy(), lw=1.2, label=name)
            ax.fill_between(x, r["uniform_low"].to_numpy(), r["uniform_high"].to_numpy(), alpha=0.18)
        ax.set_xscale("log")
        ax.set_ylim(0, 1.01)
        ax.axhline(0.95, color="#888", lw=0.6, ls=":")
        ax.set_title(METRIC_LABELS.get(metric, metric), fontsize=9)
        ax.tick_params(labelsize=7)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 5), fontsize=9, frameon=False, bbox_to_anchor=(0.5, 1.08))
    fig.tight_layout()
    return _svg(fig)
