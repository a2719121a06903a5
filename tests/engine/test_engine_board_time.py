"""The board's clock in the engine (``app.engine.timebase``): one stray frame never moves
the case clock, nothing is recorded in the future, no stimulus is back-dated or counted
twice (what the link fuzzing found)."""

from __future__ import annotations

import dataclasses

import numpy as np

from app.engine.timebase import AHEAD_CONFIRM_S, OFFSET_JUMP_S, TimeBase
from engine_testkit import stepped
from firmware_bridge.clock import ManualClock
from firmware_bridge.codec import encode
from firmware_bridge.faults import FaultPlan
from firmware_bridge.messages import BoardHeartbeat, Output, StimEpoch


def _tb(now: float = 100.0) -> tuple[ManualClock, TimeBase]:
    clock = ManualClock(now)
    tb = TimeBase(clock)
    tb.learn_offset(int((now - 10.0) * 1e6))  # the board's clock: 10 s behind the engine's
    return clock, tb


def test_one_frame_stamped_far_ahead_does_not_move_the_case_clock():
    clock, tb = _tb()
    tb.learn_offset(int((clock.now() - 10.0 + 1.9) * 1e6))  # 1.9 s ahead of the board's own clock
    assert tb.board_clock(int((clock.now() - 10.0 - 0.05) * 1e6)) == clock.now() - 0.05
    clock.advance(0.1)
    tb.learn_offset(int((clock.now() - 10.0) * 1e6))  # the next one as before: the stray is forgotten
    clock.advance(AHEAD_CONFIRM_S)
    tb.learn_offset(int((clock.now() - 10.0 + 1.9) * 1e6))
    assert tb.board_clock(int((clock.now() - 10.0) * 1e6)) == clock.now()


def test_a_board_clock_that_really_jumped_ahead_is_believed_when_it_lasts():
    clock, tb = _tb()
    for _ in range(int(AHEAD_CONFIRM_S / 0.1) + 1):
        tb.learn_offset(int((clock.now() - 10.0 + 3.0) * 1e6))
        clock.advance(0.1)
    assert abs(tb.board_clock(int((clock.now() - 7.0) * 1e6)) - clock.now()) < 1e-6


def test_small_improvements_and_a_clock_that_went_back_are_taken_at_once():
    clock, tb = _tb()
    tb.learn_offset(int((clock.now() - 10.0 + 0.002) * 1e6))  # 2 ms less transport delay
    assert abs(tb.board_clock(int(90.0e6)) - 100.0 + 0.002) < 1e-9
    tb.learn_offset(int((clock.now() - 50.0) * 1e6))  # board restarted its clock (back 40 s)
    assert abs(tb.board_clock(int(50.0e6)) - 100.0) < 1e-9
    assert OFFSET_JUMP_S < 1.0


def test_nothing_happens_after_it_was_known():
    clock, tb = _tb()
    ahead = int((clock.now() - 10.0 + 1.5) * 1e6)  # an epoch stamped 1.5 s ahead of the board's clock
    assert tb.board_clock(ahead, latency_s=0.05) == clock.now() - 0.05
    assert tb.case_t_of_board(ahead, latency_s=0.05) <= tb.now_t() - 0.05 + 1e-9  # rounding of case time
    clock.advance(0.2)  # a time the board's clock vouches for is placed as before
    assert abs(tb.board_clock(int((clock.now() - 10.0 - 0.1) * 1e6), latency_s=0.05) - (clock.now() - 0.1)) < 1e-9


def test_two_pulses_of_one_output_at_once_are_one_pulse_sent_twice():
    """The link drops a stimulus epoch during the previous pulse of the same output, even
    with a new counter (a copy made by a faulty board): it is never journaled twice."""
    s = stepped(None, seed=51, faults=FaultPlan(seed=2))
    s.faults.command("renumber on dir=board", s.clock.now())
    last: dict[str, StimEpoch] = {}
    real = s.monitor.board.message

    def keep(msg):
        if isinstance(msg, StimEpoch):
            last["e"] = msg
        real(msg)

    s.monitor.board.message = keep
    s.run_for(0.5)
    s.must("case.start", patient_id="TWICE", planned_sides=["L"])
    s.must("stim.set", output="probe", rate_hz=2.0)
    s.must("stim.output", output="probe", on=True)
    s.run_for(1.2)
    e = last["e"]
    stimuli = s.monitor.counters["stimuli"]
    copy = dataclasses.replace(e, stim_counter=e.stim_counter + 1, samples=np.array(e.samples))
    s.to_engine(s.faults.process("board", encode(copy, 0), s.clock.now()))
    s.run_for(0.01)
    assert s.monitor.counters["stimuli"] == stimuli
    assert s.monitor.board.health()["invalid_by_reason"] == {"pulse_overlap": 1}
    s.run_for(0.6)  # the next real pulse, half a second later, is a stimulus again
    assert s.monitor.counters["stimuli"] == stimuli + 1


def test_an_epoch_stamped_ahead_or_a_heartbeat_ahead_never_puts_a_stimulus_in_the_future_or_back(tmp_path):
    from app.record.journal import Journal

    journal = Journal(tmp_path / "journal.db")
    plan = FaultPlan(seed=4)
    plan.command("renumber on dir=board", 0.0)
    s = stepped(None, seed=52, journal=journal, faults=plan)
    last: dict[type, object] = {}
    real = s.monitor.board.message

    def keep(msg):
        last[type(msg)] = msg
        real(msg)

    s.monitor.board.message = keep
    s.run_for(0.5)
    s.must("case.start", patient_id="AHEAD", planned_sides=["L"])
    s.must("stim.set", output="probe", rate_hz=30.0)
    s.must("stim.output", output="probe", on=True)
    s.run_for(1.0)
    now_us = int(s.board.now() * 1e6)
    hb = last[BoardHeartbeat]
    s.to_engine(s.faults.process("board", encode(BoardHeartbeat(now_us + 1_900_000, hb.counter + 1), 0),
                                 s.clock.now()))
    s.run_for(0.3)
    e = last[StimEpoch]
    ahead = dataclasses.replace(e, stim_counter=e.stim_counter + 1, board_time_us=now_us + 1_500_000 + 300_000,
                                output=Output.PROBE)
    s.to_engine(s.faults.process("board", encode(ahead, 0), s.clock.now()))
    s.run_for(1.0)
    case_id = s.monitor.case_id
    now = s.monitor.now_t()
    t = [x.t_s for x in journal.entries(case_id, kinds=["stimulus"], blobs=False)]
    assert t == sorted(t) and t[-1] <= now
    assert len(t) == len(set(t))
    journal.close()
