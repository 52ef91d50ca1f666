"""Counter-based random numbers: a value for every (device stream, reading number) pair, computed in bulk.

The simulator needs, for each device and each reading slot, random draws (noise, dropout, spikes, categorical
choices) that do not depend on how readings are batched, which window is generated first, or in which order
devices are visited. A sequential generator cannot give that cheaply, so draws are a pure function of a 64-bit
*stream key* (one per device and purpose, derived from ``numpy.random.default_rng``) and the reading number,
mixed with the SplitMix64 finaliser. Everything here works on whole numpy arrays.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["U64", "mix64", "derive_keys", "uniform", "normal", "purpose_tag"]

U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_SECOND = np.uint64(0xD1B54A32D192ED03)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_TO_UNIT = 2.0**-53


def mix64(values: U64) -> U64:
    """Return the SplitMix64 finaliser of each uint64 in ``values`` (a well-spread 64-bit hash); wraps mod 2**64."""
    h = values ^ (values >> _S30)
    h *= _M1
    h ^= h >> _S27
    h *= _M2
    h ^= h >> _S31
    return h


def purpose_tag(*parts: int) -> np.uint64:
    """Return a 64-bit tag naming one use of randomness (e.g. ``(3, 0)`` = "noise of signal 0")."""
    acc = np.array([0x243F6A8885A308D3], dtype=np.uint64)
    for part in parts:
        acc = mix64(acc + np.array([part % 2**64], dtype=np.uint64) * _GOLDEN)
    return np.uint64(acc[0])


def derive_keys(device_keys: U64, tag: np.uint64) -> U64:
    """Return one stream key per device for the purpose ``tag``, given the devices' base keys."""
    return mix64(device_keys ^ tag)


def _bits(keys: U64, counters: I64) -> U64:
    return mix64(keys + (counters.astype(np.uint64) + np.uint64(1)) * _GOLDEN)


def uniform(keys: U64, counters: I64) -> F64:
    """Return a float in [0, 1) for each (stream key, counter) pair; same inputs give the same outputs."""
    return (_bits(keys, counters) >> _S11).astype(np.float64) * _TO_UNIT


def normal(keys: U64, counters: I64) -> F64:
    """Return a standard normal draw for each (stream key, counter) pair (Box-Muller on two derived uniforms)."""
    first = _bits(keys, counters)
    second = mix64(first ^ _SECOND)
    u1 = 1.0 - (first >> _S11).astype(np.float64) * _TO_UNIT  # (0, 1]: safe for log
    u2 = (second >> _S11).astype(np.float64) * _TO_UNIT
    out: F64 = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return out
