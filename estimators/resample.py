"""Counter-based Poisson(1) bootstrap multipliers.

The multiplier of row i in replicate b is a pure function of (key_i, b, seed): a SplitMix64 hash
mapped through the Poisson(1) quantile function. Replicates therefore do not depend on row order or
on how a log is split into batches or across workers, and partial sums simply add.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["poisson_multipliers", "poisson_weight_sums", "hash_keys"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_LUT_BITS = 16
# Poisson(1) quantile function tabulated on the top 16 bits of a uniform 64-bit hash: each count's
# probability is exact to within 2**-16, far below bootstrap Monte-Carlo error.
_CDF = np.cumsum([math.exp(-1) / math.factorial(k) for k in range(12)])
_LUT = np.searchsorted(_CDF, (np.arange(1 << _LUT_BITS) + 0.5) / (1 << _LUT_BITS), side="right").astype(np.float64)
_CELLS_PER_BLOCK = 1 << 19  # temporaries stay under glibc's mmap threshold (2²² was 2× slower)


def _mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """SplitMix64 finalizer, in place."""
    x ^= x >> np.uint64(30)
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def hash_keys(values: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """Well-mixed 64-bit keys from arbitrary uint64 values (e.g. row numbers)."""
    with np.errstate(over="ignore"):
        return _mix(np.asarray(values, dtype=np.uint64) * _GOLDEN + _GOLDEN)


def _salts(n_replicates: int, seed: int) -> npt.NDArray[np.uint64]:
    """(B,) hashed salts of the replicates 0 … B − 1 under ``seed``."""
    return hash_keys(np.arange(n_replicates, dtype=np.uint64) + np.uint64(seed) * np.uint64(1_000_003))


def _fill(keys: npt.NDArray[np.uint64], salt: npt.NDArray[np.uint64], x: npt.NDArray[np.uint64],
          out: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Poisson(1) multipliers (B, m) of ``keys`` (m,) and replicate salts (B,) written into ``out``; ``x`` is
    (2, B, m) uint64 scratch. Every step writes into the buffers: no fresh memory (and page faults) per block."""
    h, tmp = x[0], x[1]
    np.bitwise_xor(keys[None, :], salt[:, None], out=h)
    with np.errstate(over="ignore"):
        np.multiply(h, _GOLDEN, out=h)
        for shift, factor in ((30, _M1), (27, _M2)):  # SplitMix64's finalizer (`_mix`) ...
            np.right_shift(h, np.uint64(shift), out=tmp)
            np.bitwise_xor(h, tmp, out=h)
            np.multiply(h, factor, out=h)
    # ... whose last step, h ^= h >> 31, leaves the top 16 bits (all the table reads) as they are
    np.right_shift(h, np.uint64(64 - _LUT_BITS), out=tmp)
    return np.take(_LUT, tmp.view(np.int64), out=out, mode="clip")


def poisson_multipliers(
    keys: npt.NDArray[np.uint64], replicates: npt.NDArray[np.int64], *, seed: int = 0
) -> npt.NDArray[np.float64]:
    """Poisson(1) multipliers, shape (len(replicates), len(keys))."""
    rep = np.asarray(replicates, dtype=np.uint64)
    salt = hash_keys(rep + np.uint64(seed) * np.uint64(1_000_003))
    k = np.asarray(keys, dtype=np.uint64)
    return _fill(k, salt, np.empty((2, rep.shape[0], k.shape[0]), dtype=np.uint64), np.empty((rep.shape[0], k.shape[0])))


def poisson_weight_sums(
    keys: npt.NDArray[np.uint64], data: npt.NDArray[np.float64], n_replicates: int, *, seed: int = 0
) -> npt.NDArray[np.float64]:
    """Σ_i P_bi · data_i for every replicate b: shape (B, C) from data of shape (n, C).

    Rows are processed in blocks so memory stays bounded (about 0.5M multipliers at a time), in buffers
    allocated once: fresh blocks cost page faults that made the bootstrap up to 3× slower, depending on
    glibc's mmap threshold at the time.
    """
    n = data.shape[0]
    salt = _salts(n_replicates, seed)
    out = np.zeros((n_replicates, data.shape[1]))
    step = max(1, _CELLS_PER_BLOCK // max(1, n_replicates))
    size = n_replicates * min(step, n)
    scratch, mult = np.empty(2 * size, dtype=np.uint64), np.empty(size)
    k = np.asarray(keys, dtype=np.uint64)
    for start in range(0, n, step):
        block = slice(start, start + step)
        cells = n_replicates * (min(start + step, n) - start)
        shape = (n_replicates, cells // n_replicates)
        p = _fill(k[block], salt, scratch[: 2 * cells].reshape((2, *shape)), mult[:cells].reshape(shape))
        out += p @ data[block]
    return out
