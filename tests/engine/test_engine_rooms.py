"""The engine's rooms on their own: the command registry, the case state's serialisation,
the time base, the ledger's journal-first transaction and the bounded trend."""

from __future__ import annotations

import collections

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.api import protocol as p
from app.engine.case_state import CaseState, Trend, TubeCheck
from app.engine.commands import HANDLERS, SERVER_COMMANDS, command
from app.engine.breathing import BreathingCheck
from app.engine.ledger import Ledger
from app.engine.timebase import OFFSET_JUMP_S, TimeBase
from app.rules.engine import RuleEngine
from app.settings import Settings
from firmware_bridge.clock import ManualClock


# ----------------------------------------------------------------------------- commands


def test_every_engine_command_has_exactly_one_registered_handler():
    engine_commands = set(p.COMMANDS) - SERVER_COMMANDS
    assert set(HANDLERS) == engine_commands
    modules = {h.__module__.rsplit(".", 1)[1] for h in HANDLERS.values()}
    assert modules == {"case", "stimulation", "procedure", "alarms", "documents", "settings", "simulation", "state"}


def test_a_handler_for_an_unknown_or_an_already_handled_command_is_refused_at_import():
    with pytest.raises(ValueError, match="not an engine command"):
        command("no.such.command")
    with pytest.raises(ValueError, match="not an engine command"):
        command("ping")  # the API server answers it
    with pytest.raises(ValueError, match="handled twice"):
        command("case.start")(lambda m, req: {})
    assert HANDLERS["case.start"].__module__ == "app.engine.commands.case"


# ----------------------------------------------------------------------------- case state


def _case(settings: Settings) -> CaseState:
    return CaseState(case_id="c1", data={"patient_id": "P"}, rules=RuleEngine(settings), settings_before=settings)


def test_the_case_state_is_serialised_whole_or_says_why_not():
    s = Settings()
    case = _case(s)
    keys = set(case.to_json(origin=0.0))
    fields = set(CaseState.field_names())
    for name in fields:
        assert name in keys or name in CaseState.NOT_IN_SNAPSHOT, f"{name}: neither serialised nor explained"
    assert set(CaseState.NOT_IN_SNAPSHOT) <= fields, "NOT_IN_SNAPSHOT names a field that does not exist"
    assert not set(CaseState.NOT_IN_SNAPSHOT) & keys


def test_the_case_state_comes_back_from_its_snapshot():
    s = Settings()
    clock = ManualClock(100.0)
    case = _case(s)
    case.stim_index = 42
    case.rule_counts.update({"loss_of_signal": 2, "baseline_set": 1})
    case.staging_seen = 1
    case.pending_step = {"step": "V1", "side": "L", "who": "ui"}
    bc = BreathingCheck(s)
    bc.start(clock.now())
    case.tube = TubeCheck({"passed": False, "message": "L_POS 20 kOhm", "breathing_variation": bc.json(clock.now()),
                           "impedances_ohm": {"L_POS": 20000}}, 130.0, bc)
    case.tube_override = {"who": "ui", "reason": "accepted"}
    case.irritation = {"L": 12.5}
    data = case.to_json(origin=100.0)
    assert data["tube_t_s"] == pytest.approx(30.0)
    back = _case(s)
    back.restore(data, origin=200.0, settings=s)
    again = back.to_json(origin=200.0)
    bv = again.pop("tube")["breathing_variation"]
    data.pop("tube")
    assert again == data
    assert bv["L"]["status"] == "not_measurable"  # a window cut short by the restart is not measured
    assert back.tube.t_clock == pytest.approx(230.0) and not back.tube.breathing.active


# ----------------------------------------------------------------------------- time base


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 0.2), min_size=1, max_size=30), st.floats(0.0, 1e6))
def test_the_board_offset_keeps_the_least_delayed_arrival(delays, board_start_s):
    """Heartbeats arrive with transport delays (under the re-anchoring jump): the offset
    is the one of the least delayed, so case times are late by that least delay only."""
    clock = ManualClock(1000.0)
    tb = TimeBase(clock)
    for i, d in enumerate(delays):
        board_s = board_start_s + i * 0.5  # heartbeats every 0.5 s, each late by its delay
        clock.set(1000.0 + i * 0.5 + d)
        tb.learn_offset(int(round(board_s * 1e6)))
    t = tb.board_clock(int(round(board_start_s * 1e6)))
    assert t == pytest.approx(1000.0 + min(delays), abs=1e-5)


def test_a_jump_of_the_board_clock_re_anchors_and_a_new_session_forgets():
    clock = ManualClock(50.0)
    tb = TimeBase(clock)
    tb.learn_offset(10_000_000)  # board at 10 s when the engine is at 50 s
    assert tb.board_clock(11_000_000) == pytest.approx(51.0)
    clock.advance(5.0)
    tb.learn_offset(5_000_000 + int(1e6 * (OFFSET_JUMP_S + 0.5)))  # the board was reset
    assert tb.board_clock(5_000_000) == pytest.approx(55.0 - OFFSET_JUMP_S - 0.5)
    tb.forget_offset()
    assert tb.board_clock(0, latency_s=0.05) == pytest.approx(55.0 - 0.05)
    tb.start_case(52.0)
    assert tb.now_t() == pytest.approx(3.0) and tb.case_t(60.0) == pytest.approx(8.0)
    tb.end_case()
    assert tb.origin == 50.0


# ----------------------------------------------------------------------------- ledger


class _Journal:
    def __init__(self, fail: bool = False) -> None:
        self.log: list[tuple[str, list[str]]] = []
        self.fail = fail

    def open_case(self, case_data):
        return "c1"

    def append(self, case_id, kind, payload, blob=None, t_s=None):
        if self.fail:
            raise OSError("disk full")
        self.log.append(("append", [kind]))
        return len(self.log)

    def append_many(self, case_id, items):
        if self.fail:
            raise OSError("disk full")
        self.log.append(("append_many", [i[0] for i in items]))
        return [len(self.log)]

    def close_case(self, case_id, payload=None):
        self.log.append(("close", []))
        return len(self.log)


def _ledger(journal):
    published = []
    led = Ledger(journal, lambda stream, msg, sticky: published.append((stream, msg)), lambda s: True,
                 TimeBase(ManualClock()), collections.Counter(), events_kept=5)
    return led, published


def test_a_transaction_is_one_write_and_its_announcements_follow_it():
    journal = _Journal()
    led, published = _ledger(journal)
    led.write("note", {"text": "no case: not written"})
    assert journal.log == []
    led.attach("c1", collections.deque(maxlen=5))
    with led.transaction():
        led.write("stimulus", {})
        led.event("rule", "loss_of_signal", "LOS")
        led.write("rule_event", {})
        assert published == [] and journal.log == []  # nothing announced before the write
    assert journal.log == [("append_many", ["stimulus", "rule_event"])]
    assert [m["kind"] for _s, m in published] == ["loss_of_signal"]
    with led.transaction():
        led.write("stimulus", {})
    assert journal.log[-1] == ("append", ["stimulus"])


def test_nothing_is_announced_when_the_transaction_cannot_be_written():
    led, published = _ledger(_Journal(fail=True))
    led.attach("c1", collections.deque(maxlen=5))
    with pytest.raises(OSError), led.transaction():
        led.write("stimulus", {})
        led.event("rule", "loss_of_signal", "LOS")
    assert published == []


def test_the_event_list_belongs_to_the_case_and_numbers_run_on():
    led, _ = _ledger(_Journal())
    led.event("technical", "board", "before the case")
    case_events: collections.deque = collections.deque(maxlen=5)
    led.attach("c1", case_events)
    led.event("case", "opened", "opened")
    assert [e["kind"] for e in led.events] == ["opened"]
    led.close_case({"reason": "done"})
    led.event("case", "closed", "closed")
    assert [e["kind"] for e in led.events] == ["closed"] and led.case_id is None
    assert [e["seq"] for e in case_events] == [2] and led.events[0]["seq"] == 3


# ----------------------------------------------------------------------------- trend


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5000), st.integers(4, 64))
def test_a_trend_stays_bounded_and_in_time_order(n, limit):
    tr = Trend(limit)
    for i in range(n):
        tr.add(i * 0.5, float(i), 1.0)
    assert len(tr.t) < limit and len(tr.t) == len(tr.amp) == len(tr.lat)
    assert tr.t == sorted(tr.t) and tr.t[0] == 0.0
