"""HTML building blocks shared by the reports: escaping, numbers, tables."""

from __future__ import annotations

import re
from html import escape

__all__ = ["CSS", "esc", "num", "table"]

# Readable from a phone-sized frame (MLflow's artifact preview) to a 1920 px screen: the page column grows to
# 1560 px, table cells wrap at spaces (never clipped), the per-group tables flow side by side, and below
# 900 px every table stacks: one block per row, each cell labelled with its column.
CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;color:#1b1f24;max-width:1560px;margin:24px auto;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:32px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0;font-variant-numeric:tabular-nums;max-width:100%}
th,td{border:1px solid #d0d7de;padding:3px 7px;text-align:right;vertical-align:top;overflow-wrap:break-word}th{background:#f6f8fa}
td.l,th.l{text-align:left}.muted{color:#57606a;font-size:12px}.good{color:#1a7f37}.bad{color:#cf222e}
.warn{background:#fff8c5;border:1px solid #d4a72c;padding:8px 12px;border-radius:6px;margin:8px 0;overflow-wrap:anywhere}
pre{background:#f6f8fa;padding:8px;white-space:pre-wrap;overflow-wrap:anywhere;font-size:12px}svg{max-width:100%;height:auto}
code{overflow-wrap:anywhere}.grid{display:flex;flex-wrap:wrap;gap:8px 20px}.grid>div{min-width:0;max-width:100%}
.grid table{font-size:12px}h3{font-size:15px;margin-top:20px}
@media (max-width:900px){table,thead,tbody,tr,th,td{display:block}thead{display:none}table{border:0}
tr{border:1px solid #d0d7de;margin:0 0 8px;padding:2px 0}td{border:0;text-align:right;padding:2px 8px}
td[data-label]:not([data-label=""])::before{content:attr(data-label);float:left;margin-right:12px;color:#57606a;text-align:left}
td.l{text-align:left;font-weight:600}td.l[data-label]::before{font-weight:400}}
@media print{body{max-width:none;margin:0;font-size:11px}h2{page-break-after:avoid}table,svg{page-break-inside:avoid}}
"""


def esc(value: object) -> str:
    """HTML-escape any value: every string from logs or configs goes through here."""
    return escape(str(value), quote=True)


def num(x: float, metric: str = "") -> str:
    if x != x:  # NaN
        return "–"
    if metric == "cost_usd":
        return f"{x:.6f}"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.4f}" if abs(x) < 10 else f"{x:.2f}"


def _label(head: str) -> str:
    """A header's text without markup, for the ``data-label`` a stacked cell shows (already escaped)."""
    return re.sub(r"<[^>]+>", "", head).replace('"', "&quot;")


def table(head: list[str], rows: list[list[str]], left: int = 1) -> str:
    """An HTML table; each cell carries its column's name so a narrow screen can stack the rows (see `CSS`)."""
    th = "".join(f'<th class="{"l" if i < left else ""}">{h}</th>' for i, h in enumerate(head))
    thead = f"<thead><tr>{th}</tr></thead>" if any(head) else ""
    labels = [_label(h) for h in head] + [""] * max(0, max((len(r) for r in rows), default=0) - len(head))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}" data-label="{labels[i]}">{c}</td>'
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table>{thead}<tbody>{body}</tbody></table>"
