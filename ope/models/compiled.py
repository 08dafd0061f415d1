"""Compiled tree inference: the outcome and propensity boosters compiled to machine code by lleaves (LLVM).

Optional (``pip install "llm-ope[fast]"`` and ``[predictors] compiled = "lleaves"``). A booster is
compiled without cache blocking (one block of all its trees), so it adds the trees' leaves in
LightGBM's own order and its raw scores equal ``Booster.predict(raw_score=True)`` bit for bit
(tests/unit/test_compiled.py). Compiling takes seconds per booster, so compiled models are cached on
disk by the SHA-256 of the booster's model string (``$XDG_CACHE_HOME/llm-ope/lleaves``): a run pays for
it once, reruns on the same models not at all. Without lleaves, plain LightGBM predicts, and the run
says so once.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

__all__ = ["COMPILERS", "cache_dir", "raw_scorer"]

FloatArray = npt.NDArray[np.float64]
COMPILERS = ("off", "lleaves")
#: compiled models of this process, by the booster's hash (a streamed run scores every batch with the same boosters)
_LOADED: dict[str, Callable[[FloatArray], FloatArray]] = {}
_SAID: set[str] = set()


def cache_dir() -> Path:
    """Where compiled models are kept between runs."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "llm-ope" / "lleaves"


def raw_scorer(booster: lgb.Booster, compiler: str, threads: int) -> Callable[[FloatArray], FloatArray]:
    """A function of the feature matrix giving the booster's raw scores: compiled where asked and possible, else LightGBM's."""
    if compiler == "lleaves":
        compiled = _compiled(booster, threads)
        if compiled is not None:
            return compiled
    return lambda x: booster.predict(x, raw_score=True, num_threads=threads)  # type: ignore[no-any-return]


def _compiled(booster: lgb.Booster, threads: int) -> Callable[[FloatArray], FloatArray] | None:
    try:
        import lleaves
    except ImportError:
        _say_once("[predictors] compiled = \"lleaves\" but lleaves is not installed (pip install \"llm-ope[fast]\"): "
                  "LightGBM predicts instead.")
        return None
    text = booster.model_to_string()
    key = hashlib.sha256(text.encode()).hexdigest()
    if key not in _LOADED:
        cache = cache_dir() / f"{key}.so"
        cache.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.txt"
            path.write_text(text)
            model = lleaves.Model(model_file=str(path))
            try:
                model.compile(cache=str(cache), raw_score=True, fblocksize=max(1, booster.num_trees()))
            except Exception as exc:  # an LLVM the installed lleaves cannot drive: say so, predict with LightGBM
                _say_once(f"lleaves could not compile the models ({type(exc).__name__}: {exc}); LightGBM predicts instead.")
                return None
        _LOADED[key] = lambda x, m=model: np.asarray(m.predict(np.ascontiguousarray(x, dtype=np.float64), n_jobs=threads))
    return _LOADED[key]


def _say_once(message: str) -> None:
    if message not in _SAID:
        _SAID.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
