"""The virtual board's host watchdog at its exact deadline: no pulse starts later than
500 ms after the last host heartbeat, even when the pulse falls due at the deadline itself
or the sample grid (after a new acquisition rate) moves its onset past it."""

from __future__ import annotations

from firmware_bridge import codec
from firmware_bridge.clock import ManualClock
from firmware_bridge.messages import (
    ConfigureAcquisition, Hello, HostHeartbeat, Output, Stimulate, StimMode,
)
from firmware_bridge.sim.board import HOST_SILENT_S, VirtualBoard


def _board_with_aps_at_4_hz() -> tuple[ManualClock, VirtualBoard, list[int]]:
    clock = ManualClock()
    board = VirtualBoard(clock, seed=1)
    board.control("aps_attach", side="L")
    seq = [0]

    def send(m: object) -> None:
        board.receive(codec.encode(m, seq[0]))
        seq[0] += 1
        board.poll()

    for m in (Hello(), HostHeartbeat(0), ConfigureAcquisition(),
              Stimulate(Output.APS, StimMode.CONTINUOUS, 1000, 100, 4000)):
        send(m)
    board._send = send  # type: ignore[attr-defined]  (a test handle)
    return clock, board, seq


def test_a_pulse_due_at_the_deadline_is_not_delivered():
    clock, board, _ = _board_with_aps_at_4_hz()
    clock.advance(0.75)
    board.poll()
    assert [round(p.t, 6) for p in board.truth] == [0.0, 0.25]
    assert all(p.t <= HOST_SILENT_S for p in board.truth)


def test_a_pulse_the_sample_grid_moves_past_the_deadline_is_not_delivered():
    clock, board, _ = _board_with_aps_at_4_hz()
    clock.advance(0.28125)
    board.poll()
    board._send(ConfigureAcquisition(sample_rate_hz=10000, channel_mask=1, gain=1, stream_enabled=False,
                                     stream_block_samples=1, stream_decimation=1, epoch_pre_ms=0, epoch_post_ms=1))
    clock.advance(0.25)
    board.poll()
    assert [round(p.t, 6) for p in board.truth] == [0.0, 0.25]


def test_with_heartbeats_the_train_goes_on():
    clock, board, seq = _board_with_aps_at_4_hz()
    for k in range(1, 9):
        clock.advance(0.125)
        board._send(HostHeartbeat(k))
    assert len(board.truth) == 5  # 0, 0.25, 0.5, 0.75, 1.0 s
