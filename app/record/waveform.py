"""Compact lossless storage of EMG samples in journal blobs.

Owns: the waveform blob encoding used by ``stimulus`` and ``emg_block`` entries.
May import: the standard library and numpy.

Encoding ``delta-zlib/1``: the samples (µV, shape ``(channels, n)``) are quantised to
integer multiples of ``res_uV`` (default 0.1 µV, finer than any EMG amplifier's noise;
pass the board's ``nv_per_count / 1000`` to store the ADC counts exactly), differenced
along time per channel (first sample kept), written as little-endian int16 when every
difference fits (``dtype "<i2"``, the usual case) or int32 otherwise (``"<i4"``), and
compressed with zlib (level 1: about 1 ms per second of two-channel 20 kHz EMG on a
small ARM core, within a few per cent of the best zlib level for EMG noise). Decoding
reverses every step exactly, so the stored waveform is the original to within
``res_uV / 2``. Values beyond ±2^31 × ``res_uV`` (±214 V at 0.1 µV) are clipped and the
metadata says so.

The metadata dict goes into the entry's JSON payload (so it is hashed with it); the bytes
are the entry's blob.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

ENCODING = "delta-zlib/1"
DEFAULT_RES_UV = 0.1
_I32 = np.iinfo(np.int32)
_I16 = np.iinfo(np.int16)


class WaveformError(ValueError):
    """A waveform blob does not match its metadata or cannot be decoded."""


def encode(samples_uV: np.ndarray, res_uV: float = DEFAULT_RES_UV, level: int = 1) -> tuple[dict[str, Any], bytes]:
    """Encode ``samples_uV`` (1-D or ``(channels, n)``) -> (metadata, blob)."""
    if not (isinstance(res_uV, (int, float)) and res_uV > 0 and np.isfinite(res_uV)):
        raise ValueError(f"waveform resolution res_uV must be a positive number (got {res_uV!r})")
    x = np.asarray(samples_uV, dtype=np.float64)
    if x.ndim == 1:
        x = x[np.newaxis, :]
    if x.ndim != 2:
        raise ValueError(f"waveform must be 1-D or (channels, n); got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("waveform contains NaN or infinite samples")
    q = np.rint(x / res_uV)
    clipped = bool(np.any(q > _I32.max) or np.any(q < _I32.min))
    q = np.clip(q, _I32.min, _I32.max).astype(np.int64)
    d = np.diff(q, axis=1, prepend=0)
    if d.size == 0 or (d.min() >= _I16.min and d.max() <= _I16.max):
        dtype = "<i2"
    else:
        dtype = "<i4"
    # differences of int32 values may exceed int32: wrap them; the decoder wraps back
    raw = d.astype("<i8").astype(dtype, casting="unsafe").tobytes()
    blob = zlib.compress(raw, level)
    meta = {
        "encoding": ENCODING,
        "dtype": dtype,
        "res_uV": float(res_uV),
        "channels": int(x.shape[0]),
        "n": int(x.shape[1]),
        "clipped": clipped,
    }
    return meta, blob


def decode(meta: dict[str, Any], blob: bytes) -> np.ndarray:
    """(metadata, blob) -> float64 µV array of shape ``(channels, n)``."""
    if meta.get("encoding") != ENCODING:
        raise WaveformError(f"unknown waveform encoding {meta.get('encoding')!r} (expected {ENCODING})")
    try:
        channels, n, res = int(meta["channels"]), int(meta["n"]), float(meta["res_uV"])
        dtype = str(meta["dtype"])
    except (KeyError, TypeError, ValueError) as exc:
        raise WaveformError(f"waveform metadata incomplete: {exc}") from None
    if dtype not in ("<i2", "<i4"):
        raise WaveformError(f"waveform dtype {dtype!r} is not <i2 or <i4")
    try:
        raw = zlib.decompress(blob)
    except zlib.error as exc:
        raise WaveformError(f"waveform blob cannot be decompressed: {exc}") from None
    width = 2 if dtype == "<i2" else 4
    if len(raw) != channels * n * width:
        raise WaveformError(
            f"waveform blob holds {len(raw)} bytes; metadata says {channels} x {n} {dtype} samples"
        )
    d = np.frombuffer(raw, dtype=dtype).reshape(channels, n)
    q = np.cumsum(d.astype(np.int64), axis=1)
    if dtype == "<i4":  # wrapped int32 differences: wrap the sums back into int32
        q = ((q - _I32.min) % (1 << 32)) + _I32.min
    return q.astype(np.float64) * res
