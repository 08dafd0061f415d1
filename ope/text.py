"""Words in messages: ``count(1, "request")`` is "1 request", ``count(2_000, "row")`` "2,000 rows"."""

from __future__ import annotations

__all__ = ["count"]


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and the noun, singular for exactly one; thousands separated."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"
