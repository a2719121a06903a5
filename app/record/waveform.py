"""Compact lossless storage of EMG samples in journal blobs.

Owns: the waveform blob encodings used by ``stimulus`` and ``emg_block`` entries.
May import: the standard library, numpy, ``soundfile`` (libFLAC; optional at run time).

The samples (µV, shape ``(channels, n)``) are first quantised to integer multiples of
``res_uV`` (default 0.1 µV, finer than any EMG amplifier's noise; the engine passes the
board's ``nv_per_count / 1000`` so the ADC counts are stored exactly). Values beyond
±2^31 × ``res_uV`` (±214 V at 0.1 µV) are clipped and the metadata says so. Decoding gives
the original to within ``res_uV / 2``, whatever the encoding.

Encoding ``flac/1`` (written when it can be): the integers as a standard 24-bit FLAC
stream (libFLAC through ``soundfile``, compression level 5 of 8): linear prediction and
Rice coding, lossless. EMG noise is band-limited, so prediction takes about two bits per
sample off what the differences cost: about 5.9 bits per sample for 4 µV RMS background
EMG at 0.1 µV, against 8.6 for ``delta-zlib/1`` (``bench/record.py`` prints both with
their CPU time). Any FLAC tool can read a blob (``flac -d``, ``soundfile``); its sample
rate field is a placeholder (the entry's payload holds the real one).

Encoding ``delta-zlib/1`` (written when FLAC cannot be: no samples, more than 8 channels,
values beyond ±2^23 counts, or ``soundfile`` not installed; and every older record):
differenced along time per channel (first sample kept), little-endian int16 when every
difference fits (``dtype "<i2"``) else int32 (``"<i4"``), compressed with zlib (level 1).

The metadata dict goes into the entry's JSON payload (so it is hashed with it); the bytes
are the entry's blob. Blobs of both encodings are read whatever this build writes; a
``flac/1`` blob where ``soundfile`` is missing gives a ``WaveformError`` that says so.
"""

from __future__ import annotations

import io
import math
import os
import zlib
from typing import Any

import numpy as np

ENCODING = "delta-zlib/1"
FLAC_ENCODING = "flac/1"
FLAC_LEVEL = 0.5  # soundfile's 0-1 scale: libFLAC level 5 (level 8 saves another 1 % for twice the CPU)
_FLAC_MAX = (1 << 23) - 1
_FLAC_RATE = 20000  # a placeholder in the FLAC header; the payload holds the sample rate
DEFAULT_RES_UV = 0.1
_I32 = np.iinfo(np.int32)
_I16 = np.iinfo(np.int16)


class WaveformError(ValueError):
    """A waveform blob does not match its metadata or cannot be decoded."""


def _soundfile() -> Any:
    try:
        import soundfile
    except (ImportError, OSError):  # OSError: the package is there but libsndfile is not
        return None
    return soundfile


def flac_available() -> bool:
    """Whether this build can write (and read) ``flac/1`` blobs."""
    return _soundfile() is not None


def encode(samples_uV: np.ndarray, res_uV: float = DEFAULT_RES_UV, level: int = 1,
           codec: str = "auto") -> tuple[dict[str, Any], bytes]:
    """Encode ``samples_uV`` (1-D or ``(channels, n)``) -> (metadata, blob).
    ``codec``: ``"auto"`` (FLAC when it can, module doc), ``"flac"`` or ``"delta-zlib"``."""
    if codec not in ("auto", "flac", "delta-zlib"):
        raise ValueError(f"waveform codec {codec!r}: use auto, flac or delta-zlib")
    if not (isinstance(res_uV, (int, float)) and res_uV > 0 and np.isfinite(res_uV)):
        raise ValueError(f"waveform resolution res_uV must be a positive number (got {res_uV!r})")
    x = np.asarray(samples_uV, dtype=np.float64)
    if x.ndim == 1:
        x = x[np.newaxis, :]
    if x.ndim != 2:
        raise ValueError(f"waveform must be 1-D or (channels, n); got shape {x.shape}")
    # (a second of free-running EMG is 40,000 samples: every pass over them counts)
    with np.errstate(over="ignore"):  # a finite sample beyond float range here is clipped below
        q = x / res_uV
    np.rint(q, out=q)
    lo, hi = (float(q.min()), float(q.max())) if q.size else (0.0, 0.0)
    if not (math.isfinite(lo) and math.isfinite(hi)) and not np.isfinite(x).all():
        raise ValueError("waveform contains NaN or infinite samples")
    clipped = hi > _I32.max or lo < _I32.min
    meta = {"encoding": ENCODING, "dtype": "<i2", "res_uV": float(res_uV), "channels": int(x.shape[0]),
            "n": int(x.shape[1]), "clipped": clipped}
    if codec != "delta-zlib":
        sf = _soundfile()
        fits = q.size > 0 and x.shape[0] <= 8 and -_FLAC_MAX <= lo and hi <= _FLAC_MAX
        if sf is not None and fits:
            left = np.empty((q.shape[1], q.shape[0]), dtype=np.int32)  # frames x channels, 24 bits left-justified
            np.multiply(q.T, 256.0, out=left, casting="unsafe")
            return {**meta, "encoding": FLAC_ENCODING, "dtype": "<i4"}, _flac_bytes(sf, left)
        if codec == "flac":
            why = "soundfile (libFLAC) is not installed" if sf is None else "the samples do not fit 24-bit FLAC"
            raise ValueError(f"waveform cannot be stored as FLAC: {why}")
    q = np.clip(q, _I32.min, _I32.max).astype(np.int64)
    d = np.diff(q, axis=1, prepend=0)
    if d.size == 0 or (d.min() >= _I16.min and d.max() <= _I16.max):
        dtype = "<i2"
    else:
        dtype = "<i4"
    # differences of int32 values may exceed int32: wrap them; the decoder wraps back
    raw = d.astype("<i8").astype(dtype, casting="unsafe").tobytes()
    blob = zlib.compress(raw, level)
    return {**meta, "dtype": dtype}, blob


def _flac_bytes(sf: Any, frames: np.ndarray) -> bytes:
    """``frames`` (frames x channels, int32, 24 bits left-justified) as a FLAC stream.

    Where the system has anonymous memory files (Linux), libFLAC writes into one through its
    file descriptor: the encoding then runs without Python's interpreter lock from start to
    end. Through a ``BytesIO`` it calls back into Python for every write, seek and tell
    (about twenty times a second of EMG), and each call takes the lock from the engine's
    monitoring thread while the journal writer's thread encodes. The bytes are the same; a
    system without such files, or one that refuses one, gets them through the ``BytesIO``."""
    memfd = getattr(os, "memfd_create", None)
    fd = -1
    if memfd is not None:
        try:
            fd = memfd("lnm-flac", getattr(os, "MFD_CLOEXEC", 0))
        except OSError:  # refused here (a sandbox) or no descriptor left: the BytesIO way
            pass
    if fd < 0:
        buf = io.BytesIO()
        sf.write(buf, frames, _FLAC_RATE, format="FLAC", subtype="PCM_24", compression_level=FLAC_LEVEL)
        return buf.getvalue()
    try:
        with sf.SoundFile(fd, "w", samplerate=_FLAC_RATE, channels=frames.shape[1], format="FLAC",
                          subtype="PCM_24", closefd=False, compression_level=FLAC_LEVEL) as f:
            f.write(frames)
        size = os.lseek(fd, 0, os.SEEK_END)
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


def decode(meta: dict[str, Any], blob: bytes) -> np.ndarray:
    """(metadata, blob) -> float64 µV array of shape ``(channels, n)``."""
    if meta.get("encoding") not in (ENCODING, FLAC_ENCODING):
        raise WaveformError(f"unknown waveform encoding {meta.get('encoding')!r} "
                            f"(this software reads {FLAC_ENCODING} and {ENCODING})")
    try:
        channels, n, res = int(meta["channels"]), int(meta["n"]), float(meta["res_uV"])
        dtype = str(meta["dtype"])
    except (KeyError, TypeError, ValueError) as exc:
        raise WaveformError(f"waveform metadata incomplete: {exc}") from None
    if meta["encoding"] == FLAC_ENCODING:
        return _decode_flac(blob, channels, n) * res
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


def _decode_flac(blob: bytes, channels: int, n: int) -> np.ndarray:
    sf = _soundfile()
    if sf is None:
        raise WaveformError("waveform blob is FLAC (flac/1) but soundfile (libFLAC) is not installed; "
                            "install the product's requirements to read it")
    try:
        data, _rate = sf.read(io.BytesIO(bytes(blob)), dtype="int32", always_2d=True)
    except (RuntimeError, ValueError, TypeError, sf.LibsndfileError) as exc:
        raise WaveformError(f"waveform blob cannot be decompressed (FLAC): {exc}") from None
    if data.shape != (n, channels):
        raise WaveformError(f"waveform blob holds {data.shape[1]} x {data.shape[0]} FLAC samples; metadata says "
                            f"{channels} x {n}")
    return (data.T >> 8).astype(np.float64)
