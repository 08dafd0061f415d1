"""HTML building blocks shared by the reports: escaping, numbers, tables."""

from __future__ import annotations

from html import escape

__all__ = ["esc", "num", "table"]


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


def table(head: list[str], rows: list[list[str]], left: int = 1) -> str:
    th = "".join(f'<th class="{"l" if i < left else ""}">{h}</th>' for i, h in enumerate(head))
    thead = f"<thead><tr>{th}</tr></thead>" if any(head) else ""
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table>{thead}<tbody>{body}</tbody></table>"
