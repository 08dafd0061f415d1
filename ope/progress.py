"""Progress bars for steps that take more than a second (tqdm, on stderr)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm

__all__ = ["progress"]


@contextmanager
def progress(description: str, *, total: int | None, enabled: bool = True) -> Iterator[tqdm]:
    """A bar for ``total`` steps, or a spinner-like counter when the total is unknown."""
    # disable=None: tqdm draws only on a terminal, so logs and pipes stay clean
    bar = tqdm(total=total, desc=description, disable=None if enabled else True, leave=False, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()
