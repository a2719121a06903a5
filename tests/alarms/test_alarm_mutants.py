"""What the alarm system hands on, in full: the record of notices, the crash-resume state
and its restored log line, the JSON forms, and the details a rule event leaves behind.

The transition tables are tested in ``test_alarm_manager.py``; these pin every field of
what the journal, the state snapshot and a resumed engine receive.
"""

from __future__ import annotations

import pytest

from app.alarms import AlarmKind, AlarmManager, alarm_id, apply_rule_event
from app.alarms.catalog import definition
from app.alarms.mapping import describe
from app.model import EventKind, Priority, RuleEvent, Side, Site
from app.settings import Settings
from firmware_bridge.clock import ManualClock

LOS = AlarmKind.LOSS_OF_SIGNAL
AMP = AlarmKind.AMPLITUDE_DECREASE
RECOVERED = AlarmKind.SIGNAL_RECOVERED


def make(start: float = 100.0):
    clock = ManualClock(start)
    seen = []
    return clock, AlarmManager(clock, Settings(), on_log=seen.append), seen


def ev(kind: EventKind, side=Side.L, site=Site.VAGUS, priority=Priority.HIGH, **detail) -> RuleEvent:
    return RuleEvent(t_s=12.05, kind=kind, side=side, site=site, priority=priority, stimulus_index=7, detail=detail)


def test_a_notice_is_shown_and_logged_with_its_words_and_details():
    clock, m, seen = make()
    n = m.notify(RECOVERED, "VAGUS-L", message="Signal back", detail={"amplitude_uV": 300.0})
    d = definition(RECOVERED)
    assert (n.t, n.kind, n.key, n.title, n.message, n.detail) == (
        100.0, "signal_recovered", "VAGUS-L", d.title, "Signal back", {"amplitude_uV": 300.0})
    entry = seen[-1]
    assert (entry.t, entry.alarm_id, entry.transition, entry.who, entry.kind, entry.priority, dict(entry.detail)) == (
        100.0, "signal_recovered:VAGUS-L", "notice", "engine", "signal_recovered", "info",
        {"message": "Signal back", "amplitude_uV": 300.0})
    clock.advance(1.0)
    plain = m.notify(RECOVERED)  # no key, no message: the catalogue's words
    assert (plain.key, plain.message, plain.detail) == ("", d.message, {})
    assert seen[-1].alarm_id == "signal_recovered" and seen[-1].detail == {"message": d.message}
    assert m.state().notices == (n, plain)
    assert m.state().alarms == ()  # a notice never sounds


def test_a_crash_resume_state_brings_back_every_alarm_and_notice_with_its_age():
    clock, m, _seen = make(100.0)
    m.raise_condition(LOS, "VAGUS-L", message="Left vagus lost", detail={"amplitude_uV": 20.0, "sides": (1, 2)})
    clock.advance(5.0)
    m.raise_condition(AMP, "VAGUS-R", who="rules")
    m.acknowledge(alarm_id(AMP, "VAGUS-R"), who="nurse")
    m.notify(RECOVERED, "RLN-L", message="back", detail={"x": 1})
    clock.advance(2.0)
    m.audio_off(who="nurse")
    state = m.to_state()
    assert (state["version"], state["seq"], state["reminders"], state["audio_mode_at_save"]) == (1, 2, 0, "off")
    los, amp = sorted(state["alarms"], key=lambda r: r["kind"])[::-1]
    assert los == {"kind": "loss_of_signal", "key": "VAGUS-L", "seq": 1, "priority": "high",
                   "message": "Left vagus lost", "detail": {"amplitude_uV": 20.0, "sides": [1, 2]},
                   "age_s": 7.0, "unack_age_s": 7.0, "condition_active": True, "acknowledged": False,
                   "acknowledged_by": None, "escalated": False}
    assert (amp["age_s"], amp["unack_age_s"], amp["acknowledged"], amp["acknowledged_by"]) == (2.0, None, True, "nurse")
    assert state["notices"] == [{"t": 105.0, "kind": "signal_recovered", "key": "RLN-L",
                                 "title": definition(RECOVERED).title, "message": "back", "detail": {"x": 1},
                                 "age_s": 2.0}]

    clock2, m2, seen2 = make(1000.0)
    m2.restore(state, who="resume")
    st = m2.state()
    a = st.by_id(alarm_id(LOS, "VAGUS-L"))
    assert (a.since, a.unacknowledged_since, a.message, dict(a.detail), a.seq) == (
        993.0, 993.0, "Left vagus lost", {"amplitude_uV": 20.0, "sides": [1, 2]}, 1)
    b = st.by_id(alarm_id(AMP, "VAGUS-R"))
    assert (b.since, b.unacknowledged_since, b.acknowledged, b.acknowledged_by) == (998.0, None, True, "nurse")
    (notice,) = st.notices
    assert (notice.t, notice.kind, notice.key, notice.title, notice.message, dict(notice.detail)) == (
        998.0, "signal_recovered", "RLN-L", definition(RECOVERED).title, "back", {"x": 1})
    assert st.audio.mode == "normal"  # audio off is not restored: fail safe
    restored = seen2[-1]
    assert (restored.t, restored.alarm_id, restored.transition, restored.who) == (1000.0, None, "restored", "resume")
    assert restored.detail == {"alarms": sorted([alarm_id(LOS, "VAGUS-L"), alarm_id(AMP, "VAGUS-R")]),
                               "audio_mode_at_save": "off", "audio_now": "normal"}
    # the next alarm continues the numbering
    m2.raise_condition(AlarmKind.NO_CURRENT, "RLN-L")
    assert m2.state().by_id(alarm_id(AlarmKind.NO_CURRENT, "RLN-L")).seq == 3
    assert m2.to_state()["seq"] == 3


def test_a_restore_defaults_what_an_older_state_leaves_out_and_keeps_the_reminder_count():
    clock, m, _seen = make()
    m.restore({"version": 1, "alarms": [
        {"kind": "loss_of_signal", "key": "VAGUS-L", "seq": 4, "priority": "high", "message": "m",
         "age_s": 1.0, "unack_age_s": None, "condition_active": True, "acknowledged": True,
         "escalated": False}]})
    a = m.state().alarms[0]
    assert (dict(a.detail), a.acknowledged_by, a.since, m.state().notices) == ({}, None, 99.0, ())
    m.raise_condition(AMP, "VAGUS-R")
    assert m.state().by_id(alarm_id(AMP, "VAGUS-R")).seq == 5  # after the restored one
    m.restore({"version": 1, "alarms": [], "seq": 9, "reminders": 4, "notices": [
        {"t": 0, "kind": "baseline_set", "key": "", "title": "T", "message": "M", "age_s": 0.5}]})
    assert m.to_state()["reminders"] == 4 and m.to_state()["seq"] == 9
    assert m.state().notices[0].detail == {} and m.state().notices[0].t == 99.5
    m.restore({"version": 1, "alarms": []})
    assert m.to_state()["seq"] == 0 and m.to_state()["reminders"] == 0


@pytest.mark.parametrize("data, message", [
    ({"version": 2, "alarms": []}, "alarm state cannot be restored: version 2, expected 1"),
    ({"alarms": []}, "alarm state cannot be restored: version None, expected 1"),
    ({"version": 1, "alarms": [{"kind": "baseline_set"}]},
     "alarm state cannot be restored: info kind baseline_set cannot be an active alarm"),
])
def test_a_state_that_cannot_be_restored_is_refused_in_words(data, message):
    _clock, m, _seen = make()
    with pytest.raises(ValueError) as info:
        m.restore(data)
    assert str(info.value) == message


def test_many_notices_keep_the_newest_fifty_after_a_restore():
    clock, m, _seen = make()
    for i in range(60):
        m.notify(RECOVERED, f"k{i}")
    state = m.to_state()
    assert len(state["notices"]) == 50
    m.restore({**state, "notices": state["notices"] * 2})
    notices = m.state().notices
    assert len(notices) == 50 and notices[-1].key == "k59"


def test_the_json_forms_of_the_state():
    clock, m, _seen = make(100.1234567)
    m.raise_condition(LOS, "VAGUS-L", detail={"p": Priority.HIGH})
    m.notify(RECOVERED, "VAGUS-L")
    m.pause_audio(who="nurse")
    clock.advance(0.0004)
    st = m.state()
    j = st.to_json()
    assert j["t"] == 100.123857
    (a,) = j["alarms"]
    assert a["since"] == 100.123457 and a["unacknowledged_since"] == 100.123457 and a["detail"] == {"p": "high"}
    assert a["id"] == "loss_of_signal:VAGUS-L" and a["priority"] == "high" and a["acknowledged"] is False
    assert j["notices"] == [{"t": 100.123457, "kind": "signal_recovered", "key": "VAGUS-L",
                             "title": definition(RECOVERED).title, "message": definition(RECOVERED).message,
                             "detail": {}}]
    pause = Settings()["alarms.audio_pause_s"]
    assert j["audio"] == {"mode": "paused", "remaining_s": round(pause - 0.0004, 3), "since": 100.123457,
                          "by": "nurse", "reminders": 0, "next_reminder_in_s": None}
    m.acknowledge(alarm_id(LOS, "VAGUS-L"))
    assert m.state().to_json()["alarms"][0]["unacknowledged_since"] is None
    log = m.log[-1].to_json()
    assert log == {"t": 100.123857, "alarm_id": "loss_of_signal:VAGUS-L", "transition": "acknowledged",
                   "who": "operator", "kind": "loss_of_signal", "priority": "high", "detail": log["detail"]}
    assert m.state().present("high")[0].id == "loss_of_signal:VAGUS-L"
    assert m.state().present(Priority.MEDIUM) == ()


def test_the_audio_view_in_json_while_off():
    clock, m, _seen = make(10.0)
    m.audio_off(who="nurse")
    clock.advance(1.23456)
    j = m.state().audio.to_json()
    remind = Settings()["alarms.audio_off_reminder_s"]
    assert j == {"mode": "off", "remaining_s": None, "since": 10.0, "by": "nurse", "reminders": 0,
                 "next_reminder_in_s": round(remind - 1.23456, 3)}


def test_an_unknown_kind_is_refused_with_the_known_ones():
    with pytest.raises(ValueError) as info:
        definition("loss_of_sinal")
    assert str(info.value) == ("unknown alarm kind 'loss_of_sinal'; known kinds: "
                               + ", ".join(k.value for k in AlarmKind))


def test_a_catalogue_row_as_json():
    assert definition(AMP).to_json() == {
        "kind": "amplitude_decrease", "category": "physiological", "priority": "medium", "latch": "none",
        "title": definition(AMP).title, "message": definition(AMP).message, "action": definition(AMP).action,
        "momentary": False, "escalate_to": definition(AMP).escalate_to.value,
    }
    assert definition(RECOVERED).to_json()["escalate_to"] is None


def test_a_rule_event_leaves_its_time_stimulus_and_priority_in_the_alarm():
    _clock, m, seen = make()
    apply_rule_event(m, ev(EventKind.AMPLITUDE_DECREASE, priority=Priority.MEDIUM, amplitude_uV=40.0), who="rules")
    a = m.state().alarms[0]
    assert dict(a.detail) == {"amplitude_uV": 40.0, "rule_t_s": 12.05, "stimulus_index": 7,
                              "rule_priority": "medium"}
    apply_rule_event(m, ev(EventKind.SIGNAL_RECOVERED, amplitude_uV=300.0), who="rules-2")
    cleared = [e for e in seen if e.transition == "cleared"]
    assert [(e.alarm_id, e.who, dict(e.detail)) for e in cleared] == [
        ("amplitude_decrease:VAGUS-L", "rules-2", {"by_event": "signal_recovered"})]
    notice = seen[-1]
    assert (notice.transition, notice.who, notice.alarm_id) == ("notice", "rules-2", "signal_recovered:VAGUS-L")
    assert notice.detail == {"message": describe(ev(EventKind.SIGNAL_RECOVERED, amplitude_uV=300.0),
                                                 definition(RECOVERED).message),
                             "amplitude_uV": 300.0, "rule_t_s": 12.05, "stimulus_index": 7, "rule_priority": "high"}
    assert m.state().notices[-1].message.startswith("Left vagus (VAGUS-L): ")
    # a priority given as plain text is kept as it is
    apply_rule_event(m, ev(EventKind.POOR_BASELINE, priority="low"))
    assert m.state().by_id("poor_baseline:VAGUS-L").detail["rule_priority"] == "low"


def test_a_systemic_recovery_ends_the_blockade_alarm_in_the_record():
    _clock, m, seen = make()
    apply_rule_event(m, ev(EventKind.NEUROMUSCULAR_BLOCKADE_SUSPECTED))
    touched = apply_rule_event(m, ev(EventKind.SIGNAL_RECOVERED, recovered=["neuromuscular_blockade_suspected"]),
                               who="rules-3")
    assert "neuromuscular_blockade_suspected:BOTH" in touched
    ended = [e for e in seen if e.alarm_id == "neuromuscular_blockade_suspected:BOTH"][-1]
    assert (ended.who, dict(ended.detail)) == ("rules-3", {"by_event": "signal_recovered"})
    assert m.state().notices[-1].key == "VAGUS-L"  # the recovery itself is of one side


def test_the_numbers_in_a_message():
    both = ev(EventKind.NEUROMUSCULAR_BLOCKADE_SUSPECTED, amplitude_uV=10.0, latency_ms=3.456, sides={
        "L": {"amplitude_pct": 40.4}, "R": {"amplitude_pct": 35.6, "reference": "aps_baseline"}, "X": 3})
    assert describe(both, "Fall.") == ("Both sides (BOTH): Fall. [amplitude 10 µV, latency 3.46 ms, "
                                       "left 40 % of baseline, right 36 % of APS baseline]")
    assert describe(ev(EventKind.LOSS_OF_SIGNAL, sides="L"), "Lost.") == "Left vagus (VAGUS-L): Lost."
    assert describe(ev(EventKind.LOSS_OF_SIGNAL, sides={"L": {"amplitude_pct": "x"}}), "Lost.") == (
        "Left vagus (VAGUS-L): Lost.")
    assert describe(ev(EventKind.LOSS_OF_SIGNAL, amplitude_uV=True), "Lost.") == "Left vagus (VAGUS-L): Lost."
