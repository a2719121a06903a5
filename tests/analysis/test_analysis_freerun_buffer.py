"""Free-running EMG: the detector keeps its own copy of the samples it holds back.

A caller may fill one block buffer again and again (a reader with a fixed buffer): the
samples the detector still holds (a partial frame, the wait for late stimulus notes) must
not change when the caller overwrites its array after ``feed`` returns."""

from __future__ import annotations

import numpy as np

from app.analysis.freerun import FreeRunDetector
from app.settings import Settings


def _stream(fs: float, seconds: float) -> np.ndarray:
    rng = np.random.default_rng(3)
    x = rng.normal(0.0, 4.0, (2, int(fs * seconds)))
    t = np.arange(x.shape[1]) / fs
    burst = (t > 1.0) & (t < 1.4)  # a burst of spikes on the left
    x[0, burst] += 300.0 * np.sign(np.sin(2 * np.pi * 150.0 * t[burst])) * (rng.random(burst.sum()) < 0.05)
    return x


def _events(fs: float, x: np.ndarray, reuse: bool) -> list[tuple]:
    det = FreeRunDetector(Settings(), fs)
    block = int(0.0125 * fs)  # 250 samples: not whole 10 ms frames, a part of a frame is held back
    buf = np.empty((2, block))
    out = []
    for i in range(0, x.shape[1], block):
        chunk = x[:, i : i + block]
        if reuse and chunk.shape[1] == block:
            buf[:] = chunk  # the caller's one buffer, refilled for every block
            out += det.feed(buf, i / fs)
        else:
            out += det.feed(chunk.copy(), i / fs)
    out += det.flush()
    return [e.to_json() for e in out]


def test_a_reused_block_buffer_gives_the_events_of_fresh_blocks():
    fs = 20000.0
    x = _stream(fs, 3.0)
    fresh = _events(fs, x, reuse=False)
    assert fresh  # the burst is found
    assert _events(fs, x, reuse=True) == fresh
