"""EMG blocks that arrive together are analysed as one: ``emg_stream.coalesce`` joins
runs of consecutive blocks without reordering, dropping or changing anything, and the
engine's results are the same whether the board's messages come one by one or together."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.engine.emg_stream import coalesce
from firmware_bridge.messages import BoardHeartbeat, EmgBlock


def _block(first: int, n: int, rate: int = 20000, ch: int = 2, scale: int = 1000, t_us: int | None = None) -> EmgBlock:
    samples = (np.arange(ch * n, dtype=np.int32).reshape(ch, n) + first * 7) % 997
    return EmgBlock(board_time_us=first * 50 if t_us is None else t_us, first_sample=first,
                    sample_rate_hz=rate, nv_per_count=scale, samples=samples)


def _samples(msgs):
    return np.concatenate([m.samples for m in msgs if isinstance(m, EmgBlock)], axis=1)


def test_consecutive_blocks_become_one_stamped_with_the_first():
    msgs = [_block(0, 400), _block(400, 400), _block(800, 400)]
    out = coalesce(msgs)
    assert len(out) == 1
    joined = out[0]
    assert isinstance(joined, EmgBlock)
    assert (joined.first_sample, joined.board_time_us, joined.samples.shape) == (0, 0, (2, 1200))
    assert np.array_equal(joined.samples, _samples(msgs))


def test_a_gap_a_new_rate_a_new_scale_or_another_message_ends_a_run():
    hb = BoardHeartbeat(board_time_us=1, counter=0)
    msgs = [_block(0, 400), _block(500, 400),  # a gap of 100 samples
            _block(900, 400), _block(1300, 200, rate=10000),  # another rate
            _block(1500, 400), _block(1900, 400, scale=500),  # another scale
            _block(2300, 400, scale=500), hb, _block(2700, 400, scale=500)]  # a heartbeat between
    out = coalesce(msgs)
    assert [getattr(m, "first_sample", "hb") for m in out] == [0, 500, 1300, 1500, 1900, "hb", 2700]
    assert out[1].samples.shape[1] == 800  # 500 and 900 join
    assert out[4].samples.shape[1] == 800  # 1900 and 2300 join


def test_no_joined_block_is_longer_than_the_limit():
    msgs = [_block(i * 400, 400) for i in range(40)]  # 0.8 s at 20 kHz
    out = coalesce(msgs, max_s=0.25)
    assert all(m.samples.shape[1] <= 5000 for m in out)
    assert np.array_equal(_samples(out), _samples(msgs))
    assert [m.first_sample for m in out] == [0, 4800, 9600, 14400]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 600), st.booleans(), st.sampled_from([2000, 20000])),
                max_size=30))
def test_nothing_is_reordered_dropped_or_changed(spec):
    msgs, first = [], 0
    for gap, n, heartbeat, rate in spec:
        if heartbeat:
            msgs.append(BoardHeartbeat(board_time_us=first, counter=len(msgs) % 256))
        first += gap * 17
        msgs.append(_block(first, n, rate=rate))
        first += n
    out = coalesce(msgs)
    assert [m for m in out if not isinstance(m, EmgBlock)] == [m for m in msgs if not isinstance(m, EmgBlock)]
    if any(isinstance(m, EmgBlock) for m in msgs):
        assert np.array_equal(_samples(out), _samples(msgs))
    # every joined block starts where one of the original blocks started, with its time
    starts = {m.first_sample: m.board_time_us for m in msgs if isinstance(m, EmgBlock)}
    for m in out:
        if isinstance(m, EmgBlock):
            assert starts[m.first_sample] == m.board_time_us
    # the order of messages of either kind is kept: heartbeats sit between the same samples
    def layout(seq):
        res, seen = [], 0
        for m in seq:
            if isinstance(m, EmgBlock):
                seen += m.samples.shape[1]
            else:
                res.append(seen)
        return res
    assert layout(out) == layout(msgs)


def _day(one_by_one: bool) -> tuple[list, int]:
    from app.settings import Settings
    from engine_testkit import stepped

    s = stepped(settings=Settings(), seed=3)
    m = s.monitor
    if one_by_one:  # the engine that keeps up: every message on its own
        m.board_messages = lambda msgs: [m.board_message(x) for x in msgs]  # type: ignore[method-assign]
    s.run_for(1.0)
    s.must("case.start", patient_id="COALESCE-1", planned_sides=["L", "R"])
    s.board.control("aps_attach", side="L")
    s.must("aps.side", side="L")
    s.must("stim.output", output="aps", on=True)
    s.run_for(3.0)
    s.board.control("irritation", side="R", kind="train", duration_s=2.0, rate_hz=40.0, amplitude_uV=300.0)
    s.run_for(4.0)
    s.board.control("cautery", duration_s=1.0)
    s.run_for(4.0)
    kinds = ("irritation", "irritation_start", "cautery_start", "cautery_end")
    events = [(e["kind"], round(e.get("t_s") or -1.0, 3)) for e in s.events if e.get("kind") in kinds]
    return events, m.counters["emg_gaps"]


def test_the_engine_finds_the_same_whether_blocks_come_one_by_one_or_together():
    together, gaps_together = _day(one_by_one=False)
    alone, gaps_alone = _day(one_by_one=True)
    assert {k for k, _ in together} >= {"cautery_start", "cautery_end"}, together
    assert {k for k, _ in together} >= {"irritation_start", "irritation"}, together
    assert together == alone
    assert gaps_together == gaps_alone == 0


def _monitor_counting_end_of_input():
    from app.settings import Settings
    from engine_testkit import stepped

    s = stepped(settings=Settings(), seed=4)
    s.run_for(0.5)
    m = s.monitor
    ends = []
    real = m._after_input
    m._after_input = lambda tick=False: (ends.append(tick), real(tick))  # type: ignore[method-assign]
    return m, ends


def test_messages_read_together_end_with_one_end_of_input():
    m, ends = _monitor_counting_end_of_input()
    m.board_messages([BoardHeartbeat(board_time_us=1_000, counter=1), _block(0, 400),
                      BoardHeartbeat(board_time_us=2_000, counter=2)])
    assert ends == [False]
    m.board_messages([])
    assert ends == [False]


def test_the_end_of_input_runs_when_handling_a_message_fails():
    """What the messages before a failing one raised is announced before the failure goes on
    (to the engine loop's fail-safe)."""
    m, ends = _monitor_counting_end_of_input()
    handled = []
    real = m.board.message

    def message(msg):
        if isinstance(msg, BoardHeartbeat) and msg.counter == 2:
            raise RuntimeError("a defect in a message handler")
        handled.append(msg)
        real(msg)

    m.board.message = message  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="defect"):  # the failure goes on, not swallowed
        m.board_messages([BoardHeartbeat(board_time_us=1_000, counter=1),
                          BoardHeartbeat(board_time_us=2_000, counter=2)])
    assert len(handled) == 1 and ends == [False]
