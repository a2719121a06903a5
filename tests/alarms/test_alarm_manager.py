"""The alarm state machine, transition by transition (tables in app/alarms/manager.py)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from app.alarms import AlarmKind, AlarmManager, alarm_id
from app.settings import Settings
from firmware_bridge.clock import ManualClock

LOS = AlarmKind.LOSS_OF_SIGNAL  # latch until reset
AMP = AlarmKind.AMPLITUDE_DECREASE  # medium, no latch
LINK = AlarmKind.BOARD_LINK_LOST  # high technical, latch until ack
NOCUR = AlarmKind.NO_CURRENT  # medium technical, momentary, latch until ack
STORE = AlarmKind.STORAGE_PROBLEM  # medium, never escalates
POOR = AlarmKind.POOR_BASELINE  # low, momentary
KEY = "VAGUS-L"
ESC = Settings()["alarms.escalation_s"]
PAUSE = Settings()["alarms.audio_pause_s"]
REMIND = Settings()["alarms.audio_off_reminder_s"]


def make(start: float = 100.0):
    clock = ManualClock(start)
    seen = []
    m = AlarmManager(clock, Settings(), on_log=seen.append)
    return clock, m, seen


def state_name(m: AlarmManager, kind: AlarmKind) -> str | None:
    v = m.state().by_id(alarm_id(kind, KEY))
    if v is None:
        return None
    if v.condition_active:
        return "ACKED" if v.acknowledged else "ACTIVE"
    return "LATCHED_ACKED" if v.acknowledged else "LATCHED"


def do(m: AlarmManager, clock: ManualClock, kind: AlarmKind, op: str) -> None:
    if op == "raise":
        m.raise_condition(kind, KEY, who="rules")
    elif op == "clear":
        m.clear_condition(kind, KEY, who="rules")
    elif op == "ack":
        m.acknowledge(alarm_id(kind, KEY), who="nurse")
    elif op == "reset":
        m.reset(alarm_id(kind, KEY), who="surgeon")
    elif op == "escalate":
        clock.advance(ESC)
        m.tick()
    else:  # pragma: no cover - table typo
        raise AssertionError(op)


# Setup sequences reaching each state from absent.
REACH = {
    None: [],
    "ACTIVE": ["raise"],
    "ACKED": ["raise", "ack"],
    "LATCHED": ["raise", "clear"],
    "LATCHED_ACKED": ["raise", "ack", "clear"],
}

# (kind, from state, event, expected state, expected new log transitions)
ALARM_TABLE = [
    (LOS, None, "raise", "ACTIVE", ["raised"]),
    (NOCUR, None, "raise", "LATCHED", ["raised"]),
    (LOS, "ACTIVE", "raise", "ACTIVE", []),
    (LOS, "ACKED", "raise", "ACKED", []),
    (LOS, "LATCHED", "raise", "ACTIVE", ["re_raised"]),
    (LINK, "LATCHED", "raise", "ACTIVE", ["re_raised"]),
    (LOS, "LATCHED_ACKED", "raise", "ACTIVE", ["re_raised"]),
    (NOCUR, "LATCHED", "raise", "LATCHED", ["re_raised"]),
    (AMP, "ACTIVE", "clear", None, ["cleared"]),
    (LOS, "ACTIVE", "clear", "LATCHED", ["condition_ended"]),
    (LINK, "ACTIVE", "clear", "LATCHED", ["condition_ended"]),
    (AMP, "ACKED", "clear", None, ["cleared"]),
    (LINK, "ACKED", "clear", None, ["cleared"]),
    (LOS, "ACKED", "clear", "LATCHED_ACKED", ["condition_ended"]),
    (LOS, "LATCHED", "clear", "LATCHED", []),
    (LOS, "LATCHED_ACKED", "clear", "LATCHED_ACKED", []),
    (AMP, None, "clear", None, []),
    (LOS, "ACTIVE", "ack", "ACKED", ["acknowledged"]),
    (LINK, "LATCHED", "ack", None, ["acknowledged", "removed"]),
    (NOCUR, "LATCHED", "ack", None, ["acknowledged", "removed"]),
    (LOS, "LATCHED", "ack", "LATCHED_ACKED", ["acknowledged"]),
    (LOS, "ACKED", "ack", "ACKED", ["refused"]),
    (LOS, "LATCHED_ACKED", "ack", "LATCHED_ACKED", ["refused"]),
    (LOS, None, "ack", None, ["refused"]),
    (LOS, "LATCHED", "reset", None, ["reset"]),
    (LOS, "LATCHED_ACKED", "reset", None, ["reset"]),
    (LINK, "LATCHED", "reset", None, ["reset"]),
    (LOS, "ACTIVE", "reset", "ACTIVE", ["refused"]),
    (LOS, "ACKED", "reset", "ACKED", ["refused"]),
    (LOS, None, "reset", None, ["refused"]),
    (AMP, "ACTIVE", "escalate", "ACTIVE", ["escalated"]),
    (LOS, "LATCHED", "escalate", "LATCHED", ["escalated"]),
    (LOS, "ACKED", "escalate", "ACKED", []),
    (LOS, "LATCHED_ACKED", "escalate", "LATCHED_ACKED", []),
]


@pytest.mark.parametrize(
    "kind,start,event,expected,transitions",
    ALARM_TABLE,
    ids=[f"{k.value}-{s}-{e}" for k, s, e, _x, _t in ALARM_TABLE],
)
def test_alarm_transition(kind, start, event, expected, transitions):
    clock, m, seen = make()
    if kind is NOCUR and start == "LATCHED":
        setup = ["raise"]  # momentary: raising already leaves it latched
    else:
        setup = REACH[start]
    for op in setup:
        clock.advance(1.0)
        do(m, clock, kind, op)
    assert state_name(m, kind) == start
    n = len(m.log)
    clock.advance(1.0)
    do(m, clock, kind, event)
    assert state_name(m, kind) == expected
    new = m.log[n:]
    assert [e.transition for e in new] == transitions
    assert seen == list(m.log)  # every transition reached on_log, in order
    for e in new:
        assert e.t == clock.now()
        expected_who = {"raise": "rules", "clear": "rules", "ack": "nurse", "reset": "surgeon",
                        "escalate": "timer"}[event]
        assert e.who == expected_who


def test_escalation_changes_priority_and_ack_restores_it():
    clock, m, _ = make()
    m.raise_condition(AMP, KEY)
    clock.advance(ESC - 0.001)
    m.tick()
    v = m.state().alarms[0]
    assert (v.priority, v.escalated) == ("medium", False)
    clock.advance(0.001)
    m.tick()
    v = m.state().alarms[0]
    assert (v.priority, v.original_priority, v.escalated) == ("high", "medium", True)
    assert m.state().sounding == "high"
    m.acknowledge(v.id, who="nurse")
    v = m.state().alarms[0]
    assert (v.priority, v.escalated, v.acknowledged) == ("medium", False, True)
    assert m.state().sounding is None
    # Escalates once only.
    m.tick()
    assert [e.transition for e in m.log].count("escalated") == 1


def test_high_escalates_louder_and_storage_never_escalates():
    clock, m, _ = make()
    m.raise_condition(LOS, KEY)
    m.raise_condition(STORE, "disk")
    m.raise_condition(POOR, "VAGUS-R")
    clock.advance(ESC)
    m.tick()
    st = m.state()
    los, store, poor = st.by_id(alarm_id(LOS, KEY)), st.by_id("storage_problem:disk"), st.by_id(
        "poor_baseline:VAGUS-R")
    assert los.escalated and los.priority == "high"
    assert st.sounding_escalated and st.sounding_id == los.id
    esc = [e for e in m.log if e.transition == "escalated" and e.alarm_id == los.id][0]
    assert esc.detail["louder"] is True
    assert not store.escalated and store.priority == "medium"
    assert poor.escalated and poor.priority == "medium"


def test_escalation_timer_restarts_after_reacknowledged_reraise():
    clock, m, _ = make()
    m.raise_condition(LOS, KEY)
    m.acknowledge(None, who="nurse")
    m.clear_condition(LOS, KEY)
    clock.advance(ESC * 2)
    m.raise_condition(LOS, KEY)  # LATCHED_ACKED -> ACTIVE: new unacknowledged period
    clock.advance(ESC - 1)
    m.tick()
    assert not m.state().alarms[0].escalated
    clock.advance(1)
    m.tick()
    assert m.state().alarms[0].escalated


# ----------------------------------------------------------------------------- audio table

AUDIO_REACH = {
    "normal": [],
    "paused": [("pause",)],
    "off": [("off",)],
}

# (from, event, expected mode, expected new transitions)
AUDIO_TABLE = [
    ("normal", "pause", "paused", ["audio_paused"]),
    ("paused", "pause", "paused", ["audio_paused"]),
    ("off", "pause", "paused", ["audio_paused"]),
    ("paused", "expire", "normal", ["audio_pause_expired"]),
    ("paused", "almost", "paused", []),
    ("normal", "off", "off", ["audio_off"]),
    ("paused", "off", "off", ["audio_off"]),
    ("off", "off", "off", ["refused"]),
    ("paused", "on", "normal", ["audio_on"]),
    ("off", "on", "normal", ["audio_on"]),
    ("normal", "on", "normal", ["refused"]),
    ("off", "remind", "off", ["audio_reminder"]),
    ("off", "almost_remind", "off", []),
    ("normal", "remind", "normal", []),
]


@pytest.mark.parametrize("start,event,expected,transitions", AUDIO_TABLE,
                         ids=[f"{s}-{e}" for s, e, _x, _t in AUDIO_TABLE])
def test_audio_transition(start, event, expected, transitions):
    clock, m, seen = make()
    for (op,) in AUDIO_REACH[start]:
        {"pause": m.pause_audio, "off": m.audio_off}[op](who="nurse")
    clock.advance(1.0)
    n = len(m.log)
    if event == "pause":
        m.pause_audio(who="surgeon")
    elif event == "off":
        m.audio_off(who="surgeon")
    elif event == "on":
        m.audio_on(who="surgeon")
    elif event == "expire":
        clock.advance(PAUSE - 1.0)
        m.tick()
    elif event == "almost":
        clock.advance(PAUSE - 1.001)
        m.tick()
    elif event == "remind":
        clock.advance(REMIND - 1.0)
        m.tick()
    elif event == "almost_remind":
        clock.advance(REMIND - 1.001)
        m.tick()
    st = m.state()
    assert st.audio.mode == expected
    new = m.log[n:]
    assert [e.transition for e in new] == transitions
    assert seen == list(m.log)
    for e in new:
        assert e.who == ("timer" if event in ("expire", "remind") else "surgeon")


def test_pause_countdown_is_visible_and_restarts():
    clock, m, _ = make()
    m.pause_audio(who="nurse")
    assert m.state().audio.remaining_s == pytest.approx(PAUSE)
    clock.advance(30)
    assert m.state().audio.remaining_s == pytest.approx(PAUSE - 30)
    m.pause_audio(who="nurse")
    assert m.state().audio.remaining_s == pytest.approx(PAUSE)
    assert m.state().audio.by == "nurse"


def test_pause_with_a_shorter_time_and_refused_longer_time():
    clock, m, _ = make()
    assert m.pause_audio(who="nurse", seconds=30)
    assert m.state().audio.remaining_s == pytest.approx(30)
    assert not m.pause_audio(who="nurse", seconds=PAUSE + 1)
    assert m.log[-1].transition == "refused"
    assert "alarms.audio_pause_s" in m.log[-1].detail["reason"]


def test_reminder_repeats_every_interval_while_off():
    clock, m, _ = make()
    m.audio_off(who="nurse")
    for i in range(1, 4):
        clock.advance(REMIND / 2)
        m.tick()
        assert m.state().audio.reminders == i - 1
        clock.advance(REMIND / 2)
        m.tick()
        assert m.state().audio.reminders == i
    assert m.state().audio.next_reminder_in_s == pytest.approx(REMIND)
    m.audio_on(who="nurse")
    clock.advance(REMIND * 3)
    m.tick()
    assert m.state().audio.reminders == 3


# ----------------------------------------------------------------------------- sounding


def test_pause_silences_existing_alarms_then_they_resume():
    clock, m, _ = make()
    m.raise_condition(LOS, KEY)
    assert m.state().sounding == "high"
    clock.advance(1)
    m.pause_audio(who="surgeon")
    assert m.state().sounding is None
    assert m.state().alarms[0].audible is False
    clock.advance(PAUSE - 0.01)
    m.tick()
    assert m.state().sounding is None
    clock.advance(0.01)
    m.tick()
    assert m.state().audio.mode == "normal"
    assert m.state().sounding == "high"


def test_new_alarm_breaks_through_a_pause():
    clock, m, _ = make()
    m.raise_condition(AMP, KEY)
    m.pause_audio(who="nurse")
    clock.advance(5)
    assert m.state().sounding is None
    m.raise_condition(LOS, "RLN-R")
    st = m.state()
    assert st.sounding == "high" and st.sounding_id == "loss_of_signal:RLN-R"
    assert not st.by_id(alarm_id(AMP, KEY)).audible


def test_audio_off_cannot_silence_high_priority():
    clock, m, _ = make()
    m.raise_condition(AMP, KEY)
    m.raise_condition(LINK, "board")
    m.audio_off(who="nurse")
    st = m.state()
    assert st.sounding == "high" and st.sounding_id == "board_link_lost:board"
    assert not st.by_id(alarm_id(AMP, KEY)).audible
    assert m.log[-1].detail["high_priority_still_sounds"] is True
    m.acknowledge("board_link_lost:board", who="nurse")
    assert m.state().sounding is None  # medium stays silent: audio is off
    # A medium alarm escalating to high sounds through audio off.
    clock.advance(ESC)
    m.tick()
    assert m.state().sounding == "high"


def test_priority_ordering_and_top_acknowledge():
    clock, m, _ = make()
    m.raise_condition(POOR, "VAGUS-L")
    clock.advance(1)
    m.raise_condition(AMP, "VAGUS-R")
    clock.advance(1)
    m.raise_condition(LOS, "RLN-L")
    clock.advance(1)
    m.raise_condition(LOS, "RLN-R")
    ids = [a.id for a in m.state().alarms]
    assert ids == ["loss_of_signal:RLN-L", "loss_of_signal:RLN-R", "amplitude_decrease:VAGUS-R",
                   "poor_baseline:VAGUS-L"]
    assert m.state().sounding == "high"
    assert m.acknowledge(who="nurse")  # top: RLN-L
    ids = [a.id for a in m.state().alarms]
    assert ids[0] == "loss_of_signal:RLN-R"  # unacknowledged first within a priority
    assert m.state().by_id("loss_of_signal:RLN-L").acknowledged
    assert m.acknowledge(who="nurse")
    assert m.state().sounding == "medium"
    assert m.acknowledge(who="nurse")
    assert m.state().sounding == "low"
    assert m.acknowledge(who="nurse")  # momentary low: removed
    assert m.state().sounding is None
    assert not m.acknowledge(who="nurse")
    assert m.log[-1].transition == "refused"


def test_reraise_after_clear_is_a_new_episode():
    clock, m, _ = make()
    m.raise_condition(AMP, KEY)
    first = m.state().alarms[0]
    clock.advance(10)
    m.clear_condition(AMP, KEY)
    assert m.state().alarms == ()
    clock.advance(10)
    m.raise_condition(AMP, KEY)
    second = m.state().alarms[0]
    assert second.seq > first.seq and second.since == clock.now()
    assert [e.transition for e in m.log] == ["raised", "cleared", "raised"]


def test_latched_los_keeps_sounding_until_acknowledged_then_reset():
    clock, m, _ = make()
    m.raise_condition(LOS, KEY)
    clock.advance(3)
    m.clear_condition(LOS, KEY)  # signal recovered
    st = m.state()
    assert st.sounding == "high" and st.alarms[0].latched
    m.acknowledge(who="nurse")
    st = m.state()
    assert st.sounding is None and st.alarms[0].latched and st.alarms[0].acknowledged
    assert m.reset(who="surgeon") == 1
    assert m.state().alarms == ()


def test_reset_all_only_touches_ended_conditions():
    clock, m, _ = make()
    m.raise_condition(LOS, "VAGUS-L")
    m.raise_condition(LOS, "VAGUS-R")
    m.clear_condition(LOS, "VAGUS-L")
    assert m.reset(who="surgeon") == 1
    assert [a.id for a in m.state().alarms] == ["loss_of_signal:VAGUS-R"]
    assert m.reset(who="surgeon") == 0
    assert m.log[-1].transition == "refused"


def test_info_kind_is_a_notice_never_an_alarm():
    clock, m, _ = make()
    m.raise_condition(AlarmKind.NONRECURRENT_NERVE_SUSPECTED, "VAGUS-R", who="rules")
    st = m.state()
    assert st.alarms == () and st.sounding is None
    assert st.notices[-1].kind == "nonrecurrent_nerve_suspected"
    assert m.log[-1].transition == "notice" and m.log[-1].who == "rules"
    assert not m.clear_condition(AlarmKind.NONRECURRENT_NERVE_SUSPECTED, "VAGUS-R")


def test_unknown_kind_names_the_known_kinds():
    _clock, m, _ = make()
    with pytest.raises(ValueError, match="unknown alarm kind 'ui_disconnected'.*loss_of_signal"):
        m.raise_condition("ui_disconnected")


def test_state_is_immutable_and_json_serialisable():
    clock, m, _ = make()
    m.raise_condition(LOS, KEY, detail={"amplitude_uV": 20.5, "side": "L"})
    m.pause_audio(who="nurse")
    st = m.state()
    text = json.dumps(st.to_json())
    back = json.loads(text)
    assert back["alarms"][0]["id"] == alarm_id(LOS, KEY)
    assert back["audio"]["mode"] == "paused"
    with pytest.raises(dataclasses.FrozenInstanceError):
        st.sounding = "low"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        st.alarms[0].acknowledged = True  # type: ignore[misc]
    json.dumps([e.to_json() for e in m.log])


def test_to_state_and_restore_after_a_crash():
    clock, m, _ = make(start=1000.0)
    m.raise_condition(LOS, "VAGUS-L")
    clock.advance(5)
    m.raise_condition(AMP, "VAGUS-R")
    m.acknowledge("amplitude_decrease:VAGUS-R", who="nurse")
    m.raise_condition(LINK, "board")
    m.clear_condition(LINK, "board")
    m.notify(AlarmKind.BASELINE_SET, "VAGUS-L")
    clock.advance(ESC)
    m.tick()
    m.audio_off(who="nurse")
    saved = json.loads(json.dumps(m.to_state()))
    before = m.state()

    clock2 = ManualClock(3.0)  # a new process: a different clock origin
    seen2 = []
    m2 = AlarmManager(clock2, Settings(), on_log=seen2.append)
    m2.restore(saved, who="engine-restart")
    after = m2.state()
    assert after.audio.mode == "normal"  # fail safe: audio is back on
    assert seen2[-1].transition == "restored" and seen2[-1].who == "engine-restart"
    strip = ("since", "unacknowledged_since", "acknowledged_at")  # clock times: on the new clock
    for a, b in zip(before.alarms, after.alarms, strict=True):
        for f in a.__dataclass_fields__:
            if f in strip:
                continue
            assert getattr(a, f) == getattr(b, f), f
        assert b.since == pytest.approx(clock2.now() - (clock.now() - a.since))
        if a.acknowledged_at is not None:
            assert b.acknowledged_at == pytest.approx(clock2.now() - (clock.now() - a.acknowledged_at))
    assert after.sounding == "high"
    assert after.notices[-1].kind == "baseline_set"
    # New alarms continue the sequence numbers.
    m2.raise_condition(LOS, "RLN-R")
    assert m2.state().by_id("loss_of_signal:RLN-R").seq > max(a.seq for a in before.alarms)


@pytest.mark.parametrize("bad", [
    {},
    {"version": 99, "alarms": []},
    {"version": 1, "alarms": [{"kind": "nonsense"}]},
    {"version": 1, "alarms": [{"kind": "loss_of_signal", "key": "x"}]},
    {"version": 1, "alarms": [{"kind": "baseline_set", "key": "x", "seq": 1, "priority": "info",
                               "message": "m", "age_s": 1, "unack_age_s": None,
                               "condition_active": True, "acknowledged": False,
                               "escalated": False}]},
])
def test_restore_refuses_a_bad_snapshot(bad):
    clock, m, _ = make()
    m.raise_condition(LOS, KEY)
    with pytest.raises(ValueError, match="alarm state cannot be restored"):
        m.restore(bad)
    assert m.state().alarms[0].id == alarm_id(LOS, KEY)  # unchanged


def test_settings_change_applies():
    clock, m, _ = make()
    m.update_settings(Settings({"alarms.audio_pause_s": 30.0, "alarms.escalation_s": 10.0}))
    m.pause_audio(who="nurse")
    assert m.state().audio.remaining_s == pytest.approx(30.0)
    m.raise_condition(AMP, KEY)
    clock.advance(10)
    m.tick()
    assert m.state().alarms[0].escalated
