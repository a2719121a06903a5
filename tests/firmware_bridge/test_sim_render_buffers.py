"""The virtual board's reused work buffers change nothing: the EMG rendered into a caller's
buffer equals the EMG rendered into new arrays, and a board's output for a seed does not
depend on how its time is cut into polls."""

from __future__ import annotations

import numpy as np

from firmware_bridge.clock import ManualClock
from firmware_bridge.codec import Decoder, encode
from firmware_bridge.messages import (
    PROTOCOL_VERSION,
    ConfigureAcquisition,
    EmgBlock,
    Hello,
    HostHeartbeat,
    Output,
    Stimulate,
    StimMode,
)
from firmware_bridge.sim.board import VirtualBoard
from firmware_bridge.sim.emg import EmgGenerator
from firmware_bridge.sim.physiology import Patient


def _render_all(into_buffer: bool) -> np.ndarray:
    patient = Patient(5, {})
    gen = EmgGenerator(patient, 20000, 0.0)
    gen.add_irritation(0.05, "L", "burst", 0.2)
    buf = np.full((2, 9000), np.nan, dtype=np.float32)
    pieces, k = [], 0
    for n in (100, 3000, 7, 9000, 4096, 50000, 1):
        if into_buffer and n <= buf.shape[1]:
            out = gen.render(k, n, buf[:, :n])
            assert out.base is buf or out is buf
            pieces.append(out.copy())
        else:
            pieces.append(gen.render(k, n))
        k += n
    return np.concatenate(pieces, axis=1)


def test_render_into_a_buffer_equals_render_into_new_arrays():
    a, b = _render_all(False), _render_all(True)
    assert a.dtype == b.dtype == np.float32
    assert np.array_equal(a, b)


def _stream(poll_every_s: float) -> np.ndarray:
    clock = ManualClock()
    board = VirtualBoard(clock, seed=3)
    seq = iter(range(1000))
    for msg in (Hello(protocol_version=PROTOCOL_VERSION, host_name="t"), HostHeartbeat(counter=0),
                ConfigureAcquisition(sample_rate_hz=20000, channel_mask=3, gain=1, stream_enabled=True,
                                     stream_block_samples=400, stream_decimation=1, epoch_pre_ms=10,
                                     epoch_post_ms=50)):
        board.receive(encode(msg, next(seq)))
    decoder = Decoder()
    blocks = []
    t = 0.0
    while t < 2.0:
        clock.advance(poll_every_s)
        t += poll_every_s
        board.receive(encode(HostHeartbeat(counter=1), next(seq)))
        for frame in decoder.feed(board.poll()):
            if isinstance(frame.message, EmgBlock):
                blocks.append(frame.message.samples)
    return np.concatenate(blocks, axis=1)


def test_stream_is_the_same_whatever_the_poll_period():
    # the background is a function of the sample index (up to float32 rounding of the
    # breathing phase, which depends on where a generated block starts: 1 count at most)
    a, b = _stream(0.1), _stream(0.02)
    n = min(a.shape[1], b.shape[1])
    assert n >= 30000
    diff = np.abs(a[:, :n].astype(np.int64) - b[:, :n])
    assert diff.max() <= 1
    assert np.count_nonzero(diff) <= diff.size // 1000


def test_pulses_and_epochs_with_the_work_buffers():
    clock = ManualClock()
    board = VirtualBoard(clock, seed=4)
    board.control("aps_attach", side="L")
    seq = iter(range(1000))
    for msg in (HostHeartbeat(counter=0),
                ConfigureAcquisition(sample_rate_hz=20000, channel_mask=1, gain=2, stream_enabled=True,
                                     stream_block_samples=100, stream_decimation=4, epoch_pre_ms=10,
                                     epoch_post_ms=50),
                Stimulate(Output.APS, StimMode.CONTINUOUS, current_uA=2000, pulse_width_us=100, rate_mHz=4000)):
        board.receive(encode(msg, next(seq)))
    decoder = Decoder()
    kinds: dict[str, int] = {}
    for i in range(20):
        clock.advance(0.1)
        board.receive(encode(HostHeartbeat(counter=i + 1), next(seq)))
        for frame in decoder.feed(board.poll()):
            kinds[type(frame.message).__name__] = kinds.get(type(frame.message).__name__, 0) + 1
            if isinstance(frame.message, EmgBlock):
                assert frame.message.samples.shape == (1, 100)
                assert frame.message.sample_rate_hz == 5000
    assert kinds.get("StimEpoch", 0) >= 6
    assert kinds.get("EmgBlock", 0) >= 35
