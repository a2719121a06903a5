"""The alarm log line by line, the refusals, the audio countdowns and the crash resume with its
clock shift: what the journal, the nurse's screen and a resumed engine see, pinned exactly.

The transition tables are tested in ``test_alarm_manager.py``; these close the gaps the mutation
run (``tests/mutation/run.py --core alarms``) showed: who did what, in the words of the log,
the values returned to the caller, and every time kept across a restart.
"""

from __future__ import annotations

import dataclasses
import enum

import pytest

from app.alarms import AlarmKind, AlarmManager, alarm_id, mapping
from app.alarms.catalog import CATALOG, Latch, check_catalog
from app.alarms.manager import _plain
from app.alarms.mapping import where
from app.model import EventKind, Priority, RuleEvent, Side, Site
from app.settings import Settings
from firmware_bridge.clock import ManualClock

LOS = AlarmKind.LOSS_OF_SIGNAL  # high, latch until reset, escalates louder
AMP = AlarmKind.AMPLITUDE_DECREASE  # medium, no latch, escalates to high
LINK = AlarmKind.BOARD_LINK_LOST  # high technical, latch until ack
NOCUR = AlarmKind.NO_CURRENT  # medium, momentary, latch until ack
RECOVERED = AlarmKind.SIGNAL_RECOVERED  # info
KEY = "VAGUS-L"
ESC = Settings()["alarms.escalation_s"]
PAUSE = Settings()["alarms.audio_pause_s"]
REMIND = Settings()["alarms.audio_off_reminder_s"]


def make(start: float = 100.0, settings: Settings | None = None):
    clock = ManualClock(start)
    seen: list = []
    return clock, AlarmManager(clock, settings or Settings(), on_log=seen.append), seen


def line(entry) -> tuple:
    return (entry.t, entry.alarm_id, entry.transition, entry.who, entry.kind, entry.priority, dict(entry.detail))


def refused(t: float, aid: str | None, action: str, who: str, reason: str) -> tuple:
    return (t, aid, "refused", who, None, None, {"action": action, "reason": reason})


# -- defaults: who acted when the caller does not say ------------------------------------------


def test_the_defaults_name_the_engine_the_operator_and_the_restore():
    clock, m, seen = make()
    assert alarm_id(LINK) == "board_link_lost"
    assert m.raise_condition(LINK) == "board_link_lost"  # no key: the kind alone
    assert seen[-1].who == "engine"
    assert m.clear_condition(LINK) is True
    assert line(seen[-1]) == (100.0, "board_link_lost", "condition_ended", "engine", "board_link_lost", "high", {})
    assert m.acknowledge() is True and seen[-1].who == "operator"
    m.raise_condition(LOS, KEY)
    m.clear_condition(LOS, KEY)
    assert m.reset() == 1 and seen[-1].who == "operator"
    assert m.pause_audio() is True and seen[-1].who == "operator"
    assert m.audio_off() is True and seen[-1].who == "operator"
    assert m.audio_on() is True and seen[-1].who == "operator"
    m.restore(m.to_state())
    assert seen[-1].transition == "restored" and seen[-1].who == "restore"
    assert m.state().audio.by == "restore"


def test_a_manager_without_settings_uses_the_defaults_and_given_settings_are_used():
    clock = ManualClock(0.0)
    m = AlarmManager(clock)
    m.pause_audio()
    assert m.state().audio.remaining_s == PAUSE
    m2 = AlarmManager(clock, Settings().with_changes({"alarms.audio_pause_s": 30.0}))
    m2.pause_audio()
    assert m2.state().audio.remaining_s == 30.0


def test_a_fresh_manager_shows_audio_on_with_nobody_named():
    clock, m, _seen = make()
    audio = m.state().audio
    assert (audio.mode, audio.remaining_s, audio.since, audio.by, audio.reminders, audio.next_reminder_in_s) == (
        "normal", None, None, None, 0, None)
    assert m.to_state()["audio"] == {"mode": "normal", "since": None, "by": None, "until": None, "duration": 0.0}


# -- every refusal in the log, and its answer to the caller -------------------------------------


def test_every_refused_action_is_logged_with_its_reason_and_answers_no():
    clock, m, seen = make()
    assert m.acknowledge(who="nurse") is False
    assert line(seen[-1]) == refused(100.0, None, "acknowledge", "nurse", "no unacknowledged alarm")
    assert m.acknowledge("nope", who="nurse") is False
    assert line(seen[-1]) == refused(100.0, "nope", "acknowledge", "nurse", "no such alarm")
    aid = m.raise_condition(LOS, KEY)
    assert m.reset(aid, who="surgeon") == 0
    assert line(seen[-1]) == refused(100.0, aid, "reset", "surgeon", "condition still present")
    assert m.reset("nope", who="surgeon") == 0
    assert line(seen[-1]) == refused(100.0, "nope", "reset", "surgeon", "no such alarm")
    assert m.reset(who="surgeon") == 0
    assert line(seen[-1]) == refused(100.0, None, "reset", "surgeon", "no alarm whose condition has ended")
    m.acknowledge(aid, who="nurse")
    assert m.acknowledge(aid, who="nurse") is False
    assert line(seen[-1]) == refused(100.0, aid, "acknowledge", "nurse", "already acknowledged")
    assert m.audio_on(who="nurse") is False
    assert line(seen[-1]) == refused(100.0, None, "audio_on", "nurse", "audio is already on")
    m.audio_off(who="nurse")
    assert m.audio_off(who="nurse") is False
    assert line(seen[-1]) == refused(100.0, None, "audio_off", "nurse", "audio is already off")
    for seconds, shown in ((0, "0"), (PAUSE + 1, f"{PAUSE + 1:g}"), (-5, "-5")):
        assert m.pause_audio(who="nurse", seconds=seconds) is False
        assert line(seen[-1]) == refused(
            100.0, None, "pause_audio", "nurse",
            f"pause of {shown} s outside 0-{PAUSE:g} s (alarms.audio_pause_s)")
    assert m.state().audio.mode == "off"  # nothing refused changed anything


def test_a_pause_of_less_than_a_second_and_one_of_the_full_time_are_accepted():
    clock, m, seen = make()
    assert m.pause_audio(who="nurse", seconds=0.5) is True
    assert m.state().audio.remaining_s == 0.5
    assert m.pause_audio(who="nurse", seconds=PAUSE) is True
    assert m.state().audio.remaining_s == PAUSE


# -- the log of each transition, in full ---------------------------------------------------------


def test_raise_reraise_acknowledge_and_reset_are_logged_with_their_states():
    clock, m, seen = make()
    aid = m.raise_condition(LOS, KEY, message="Left vagus lost", detail={"amplitude_uV": 20.0}, who="rules")
    assert line(seen[-1]) == (100.0, aid, "raised", "rules", "loss_of_signal", "high",
                              {"message": "Left vagus lost", "amplitude_uV": 20.0})
    m.clear_condition(LOS, KEY, who="rules", detail={"by_event": "signal_recovered"})
    assert line(seen[-1]) == (100.0, aid, "condition_ended", "rules", "loss_of_signal", "high",
                              {"by_event": "signal_recovered"})
    clock.advance(1.0)
    m.raise_condition(LOS, KEY, message="again", detail={"amplitude_uV": 10.0}, who="rules")
    assert line(seen[-1]) == (101.0, aid, "re_raised", "rules", "loss_of_signal", "high",
                              {"from": "LATCHED", "message": "again", "amplitude_uV": 10.0})
    assert m.acknowledge(aid, who="nurse") is True
    assert line(seen[-1]) == (101.0, aid, "acknowledged", "nurse", "loss_of_signal", "high", {"from": "ACTIVE"})
    m.clear_condition(LOS, KEY, who="rules")
    m.raise_condition(LOS, KEY, message="third", who="rules")
    assert line(seen[-1]) == (101.0, aid, "re_raised", "rules", "loss_of_signal", "high",
                              {"from": "LATCHED_ACKED", "message": "third"})
    m.clear_condition(LOS, KEY, who="rules")
    assert line(seen[-1])[2] == "condition_ended"
    assert m.acknowledge(aid, who="nurse") is True
    assert line(seen[-1]) == (101.0, aid, "acknowledged", "nurse", "loss_of_signal", "high", {"from": "LATCHED"})
    assert m.reset(aid, who="surgeon") == 1
    assert line(seen[-1]) == (101.0, aid, "reset", "surgeon", "loss_of_signal", "high", {"from": "LATCHED_ACKED"})
    # acknowledging an alarm already present and acknowledged-then-ended: ACKED, removed
    link = m.raise_condition(LINK, "board")
    m.acknowledge(link, who="nurse")
    m.raise_condition(LINK, "board")  # same episode: no log
    assert line(seen[-1])[2] == "acknowledged" and line(seen[-1])[6] == {"from": "ACTIVE"}
    assert m.clear_condition(LINK, "board", who="bridge") is True
    assert line(seen[-1]) == (101.0, link, "cleared", "bridge", "board_link_lost", "high", {})


def test_an_alarm_acknowledged_after_its_condition_ended_is_removed_with_the_reason():
    clock, m, seen = make()
    aid = m.raise_condition(NOCUR, KEY, who="rules")  # momentary: latched at once
    assert m.state().by_id(aid).latched is True
    assert m.acknowledge(aid, who="nurse") is True
    assert [line(e) for e in seen[-2:]] == [
        (100.0, aid, "acknowledged", "nurse", "no_current", "medium", {"from": "LATCHED"}),
        (100.0, aid, "removed", "nurse", "no_current", "medium", {"reason": "acknowledged after its condition ended"}),
    ]
    assert m.state().alarms == ()


def test_escalation_and_its_end_are_logged_with_the_priorities_and_the_time():
    clock, m, seen = make()
    aid = m.raise_condition(AMP, KEY)
    clock.advance(ESC + 0.12345)
    m.tick()
    assert line(seen[-1]) == (100.0 + ESC + 0.12345, aid, "escalated", "timer", "amplitude_decrease", "high",
                              {"from_priority": "medium", "to_priority": "high", "louder": False,
                               "unacknowledged_s": round(ESC + 0.12345, 3)})
    los = m.raise_condition(LOS, KEY)
    clock.advance(ESC)
    m.tick()
    assert line(seen[-1])[6] == {"from_priority": "high", "to_priority": "high", "louder": True,
                                 "unacknowledged_s": ESC}
    assert m.acknowledge(aid, who="nurse") is True
    assert line(seen[-1])[6] == {"from": "ACTIVE", "escalation_ended": "high"}
    assert line(seen[-1])[5] == "medium"  # back at its own priority
    assert m.acknowledge(los, who="nurse") is True
    assert line(seen[-1])[6] == {"from": "ACTIVE", "escalation_ended": "high"}


def test_the_audio_transitions_are_logged_with_where_they_came_from():
    clock, m, seen = make()
    los = m.raise_condition(LOS, KEY)
    m.raise_condition(AMP, "VAGUS-R")
    assert m.pause_audio(who="nurse", seconds=30.0) is True
    assert line(seen[-1]) == (100.0, None, "audio_paused", "nurse", None, None,
                              {"from": "normal", "seconds": 30.0, "until": 130.0})
    clock.advance(10.0)
    assert m.audio_off(who="surgeon") is True
    assert line(seen[-1]) == (110.0, None, "audio_off", "surgeon", None, None,
                              {"from": "paused", "high_priority_still_sounds": True, "high_alarms_present": [los]})
    assert m.to_state()["audio"] == {"mode": "off", "since": 110.0, "by": "surgeon", "until": None,
                                     "duration": 30.0}
    clock.advance(REMIND)
    m.tick()
    assert line(seen[-1]) == (110.0 + REMIND, None, "audio_reminder", "timer", None, None,
                              {"audio_off_since": 110.0, "reminder": 1})
    assert m.pause_audio(who="nurse") is True
    assert line(seen[-1])[6] == {"from": "off", "seconds": PAUSE, "until": 110.0 + REMIND + PAUSE}
    clock.advance(5.0)
    assert m.audio_on(who="nurse") is True
    t = 115.0 + REMIND
    assert line(seen[-1]) == (t, None, "audio_on", "nurse", None, None, {"from": "paused"})
    audio = m.state().audio
    assert (audio.mode, audio.since, audio.by, audio.remaining_s) == ("normal", t, "nurse", None)
    assert m.to_state()["audio"]["until"] is None
    m.audio_off(who="nurse")
    assert m.audio_on(who="surgeon") is True
    assert line(seen[-1])[6] == {"from": "off"}


def test_an_expired_pause_is_logged_and_shown_as_ended_by_the_timer():
    clock, m, seen = make()
    m.pause_audio(who="nurse", seconds=20.0)
    clock.advance(19.75)
    assert m.state().audio.remaining_s == 0.25  # the last second counts down too
    assert m.state().audio.to_json()["remaining_s"] == 0.25
    clock.advance(0.25)
    m.tick()
    assert line(seen[-1]) == (120.0, None, "audio_pause_expired", "timer", None, None, {"until": 120.0})
    audio = m.state().audio
    assert (audio.mode, audio.since, audio.by, audio.remaining_s) == ("normal", 120.0, "timer", None)


def test_the_reminder_countdown_shows_the_last_second():
    clock, m, _seen = make()
    m.audio_off(who="nurse")
    clock.advance(REMIND - 0.25)
    assert m.state().audio.next_reminder_in_s == 0.25


# -- a condition that comes back -----------------------------------------------------------------


def test_a_latched_alarm_raised_again_keeps_its_unacknowledged_period_and_escalation():
    clock, m, _seen = make()
    aid = m.raise_condition(LOS, KEY)
    clock.advance(ESC)
    m.tick()
    m.clear_condition(LOS, KEY)
    clock.advance(3.0)
    m.raise_condition(LOS, KEY)
    v = m.state().by_id(aid)
    assert (v.unacknowledged_since, v.escalated, v.condition_active) == (100.0, True, True)


def test_an_acknowledged_alarm_raised_again_is_unacknowledged_and_not_escalated():
    clock, m, _seen = make()
    aid = m.raise_condition(LOS, KEY)
    m.acknowledge(aid, who="nurse")
    m.clear_condition(LOS, KEY)
    clock.advance(2.0)
    m.raise_condition(LOS, KEY)
    v = m.state().by_id(aid)
    assert v.acknowledged is False and v.escalated is False and v.acknowledged_by is None
    assert v.acknowledged_at is None and v.unacknowledged_since == 102.0
    j = v.to_json()
    assert (j["acknowledged"], j["escalated"], j["acknowledged_by"]) == (False, False, None)


def test_an_info_kind_raised_as_a_condition_keeps_its_key_words_and_details():
    clock, m, seen = make()
    assert m.raise_condition(RECOVERED, "RLN-R", message="back", detail={"amplitude_uV": 300.0},
                             who="rules") == "signal_recovered:RLN-R"
    (n,) = m.state().notices
    assert (n.key, n.message, dict(n.detail)) == ("RLN-R", "back", {"amplitude_uV": 300.0})
    assert line(seen[-1]) == (100.0, "signal_recovered:RLN-R", "notice", "rules", "signal_recovered", "info",
                              {"message": "back", "amplitude_uV": 300.0})


# -- what the screen shows -----------------------------------------------------------------------


def test_the_alarm_view_carries_the_catalogue_words_and_the_acknowledgement_time():
    clock, m, _seen = make(100.1234567)
    aid = m.raise_condition(LINK, "board")
    m.acknowledge(aid, who="nurse")
    v = m.state().by_id(aid)
    d = CATALOG[LINK]
    assert (v.key, v.title, v.action, v.message) == ("board", d.title, d.action, d.message)
    assert v.acknowledged_at == 100.1234567
    j = v.to_json()
    assert j["acknowledged_at"] == 100.123457 and j["since"] == 100.123457
    assert j["detail"] == {} and j["key"] == "board"


def test_the_state_json_names_what_sounds():
    clock, m, _seen = make()
    aid = m.raise_condition(AMP, KEY)
    clock.advance(ESC)
    m.tick()
    j = m.state().to_json()
    assert (j["sounding"], j["sounding_id"], j["sounding_escalated"]) == ("high", aid, True)
    entry = m.log[-1].to_json()
    assert entry["detail"] == {"from_priority": "medium", "to_priority": "high", "louder": False,
                               "unacknowledged_s": ESC}


def test_the_pause_countdown_in_json_keeps_its_fraction():
    clock, m, _seen = make()
    m.pause_audio(seconds=10.0)
    clock.advance(0.25)
    assert m.state().audio.to_json()["remaining_s"] == 9.75


def test_plain_values_for_the_record():
    class Colour(enum.Enum):
        RED = "red"

    class Thing:
        def __str__(self) -> str:
            return "a thing"

    out = _plain({"p": Priority.HIGH, "c": Colour.RED, "n": None, "t": Thing(), "l": (1, 2.5, True)})
    assert out == {"p": "high", "c": "red", "n": None, "t": "a thing", "l": [1, 2.5, True]}
    assert type(out["p"]) is str


def test_the_alarm_log_keeps_the_newest_twenty_thousand_lines():
    clock, m, _seen = make()
    for _ in range(20001):
        m.acknowledge()
    log = m.log
    assert len(log) == 20000


# -- crash resume with the clock shift ------------------------------------------------------------


def saved_state():
    """A state saved at clock 110: LOS (raised 100, acknowledged 104), AMP unacknowledged since 105,
    a notice at 106 and a pause by the nurse from 108 to 128 (20 s)."""
    clock, m, _seen = make(100.0)
    los = m.raise_condition(LOS, KEY)
    clock.advance(4.0)
    m.acknowledge(los, who="nurse")
    clock.advance(1.0)
    m.raise_condition(AMP, "VAGUS-R")
    clock.advance(1.0)
    m.notify(RECOVERED, "RLN-L", message="back")
    clock.advance(2.0)
    m.pause_audio(who="nurse", seconds=20.0)
    clock.advance(2.0)
    return m.to_state()


def test_the_saved_state_names_its_clock_and_its_pause():
    state = saved_state()
    assert state["clock"] == 110.0
    assert state["audio"] == {"mode": "paused", "since": 108.0, "by": "nurse", "until": 128.0, "duration": 20.0}


def test_a_restore_with_the_shift_keeps_every_time_and_the_running_pause():
    state = saved_state()
    # the new clock read 990 at the moment of the save (shift 880); 3 s have passed since
    clock, m, seen = make(993.0)
    m.restore(state, who="engine", shift=880.0)
    st = m.state()
    los = st.by_id(alarm_id(LOS, KEY))
    amp = st.by_id(alarm_id(AMP, "VAGUS-R"))
    assert (los.since, los.unacknowledged_since, los.acknowledged_at) == (980.0, None, 984.0)
    assert (amp.since, amp.unacknowledged_since, amp.acknowledged_at) == (985.0, 985.0, None)
    assert st.notices[0].t == 986.0
    audio = st.audio
    assert (audio.mode, audio.since, audio.by, audio.remaining_s) == ("paused", 988.0, "nurse", 15.0)
    assert amp.audible is False and st.sounding is None  # still covered by the pause
    assert line(seen[-1]) == (993.0, None, "restored", "engine", None, None, {
        "alarms": [alarm_id(AMP, "VAGUS-R"), alarm_id(LOS, KEY)], "audio_mode_at_save": "paused",
        "audio_now": "paused", "pause_until": 1008.0})
    assert m.to_state()["audio"] == {"mode": "paused", "since": 988.0, "by": "nurse", "until": 1008.0,
                                     "duration": 20.0}
    clock.advance(15.0)
    m.tick()
    assert line(seen[-1]) == (1008.0, None, "audio_pause_expired", "timer", None, None, {"until": 1008.0})


def test_a_restore_on_the_same_clock_with_no_shift_moves_nothing():
    state = saved_state()
    clock, m, _seen = make(112.0)
    m.restore(state, shift=0.0)
    st = m.state()
    los = st.by_id(alarm_id(LOS, KEY))
    assert (los.since, los.acknowledged_at) == (100.0, 104.0)
    assert st.by_id(alarm_id(AMP, "VAGUS-R")).unacknowledged_since == 105.0
    assert st.notices[0].t == 106.0
    assert (st.audio.mode, st.audio.since, st.audio.remaining_s) == ("paused", 108.0, 16.0)


def test_times_that_would_lie_in_the_future_are_brought_back_to_now():
    state = saved_state()
    clock, m, _seen = make(200.0)
    m.restore(state, shift=95.0)  # claims the save was at 205, after now
    st = m.state()
    los = st.by_id(alarm_id(LOS, KEY))
    amp = st.by_id(alarm_id(AMP, "VAGUS-R"))
    assert (los.since, los.acknowledged_at) == (195.0, 199.0)
    assert (amp.since, amp.unacknowledged_since) == (200.0, 200.0)
    assert st.notices[0].t == 200.0


def test_without_a_shift_or_a_saved_clock_the_ages_count_and_the_pause_is_not_restored():
    state = saved_state()
    clock, m, seen = make(1000.0)
    m.restore(state)
    st = m.state()
    assert st.by_id(alarm_id(LOS, KEY)).since == 990.0 and st.audio.mode == "normal"
    assert "pause_until" not in seen[-1].detail and seen[-1].detail["audio_now"] == "normal"
    m.restore({k: v for k, v in state.items() if k != "clock"}, shift=880.0)
    st = m.state()
    assert st.by_id(alarm_id(LOS, KEY)).since == 990.0 and st.audio.mode == "normal"
    assert (st.audio.since, st.audio.by) == (1000.0, "restore")


def test_a_pause_that_ended_while_the_engine_was_away_is_over():
    state = saved_state()
    for now in (1008.0, 1010.0):  # the pause ended at 1008 on the new clock
        clock, m, _seen = make(now)
        m.restore(state, shift=880.0)
        assert m.state().audio.mode == "normal"


def pause_restore(audio, now: float = 100.0, shift: float = 0.0, pause_s: float = PAUSE):
    settings = Settings().with_changes({"alarms.audio_pause_s": pause_s})
    clock, m, _seen = make(now, settings)
    m.restore({"version": 1, "clock": 90.0, "alarms": [], "audio": audio}, shift=shift)
    a = m.state().audio
    return (a.mode, a.since, m.to_state()["audio"]["until"], a.remaining_s, a.by)


def test_a_saved_pause_is_restored_only_when_it_is_a_pause_still_running_and_not_too_long():
    ok = {"mode": "paused", "since": 80.0, "until": 110.0, "duration": 30.0, "by": "nurse"}
    assert pause_restore(ok) == ("paused", 80.0, 110.0, 10.0, "nurse")
    assert pause_restore(ok, now=1000.0, shift=900.0) == ("paused", 980.0, 1010.0, 10.0, "nurse")
    normal = ("normal", 100.0, None, None, "restore")
    assert pause_restore(None) == normal
    assert pause_restore({**ok, "mode": "off"}) == normal
    assert pause_restore({**ok, "until": None}) == normal
    assert pause_restore({**ok, "duration": 0.0}) == normal
    assert pause_restore({**ok, "duration": None}) == normal
    assert pause_restore({**ok, "duration": PAUSE + 1, "since": 110.0 - PAUSE}) == normal
    assert pause_restore({**ok, "duration": 30.0}, pause_s=20.0) == normal  # the setting was shortened
    # without its start: it began its duration before its end
    assert pause_restore({k: v for k, v in ok.items() if k != "since"}) == ("paused", 80.0, 110.0, 10.0, "nurse")
    assert pause_restore({k: v for k, v in ok.items() if k != "by"})[4] is None
    # a short pause is restored; the full time exactly too; longer than the setting from start to end is not
    assert pause_restore({**ok, "duration": 0.5, "since": 109.5, "until": 110.0})[0] == "paused"
    assert pause_restore({**ok, "duration": PAUSE, "since": 110.0 - PAUSE})[0] == "paused"
    assert pause_restore({**ok, "since": 110.0 - PAUSE})[0] == "paused"
    assert pause_restore({**ok, "since": 110.0 - PAUSE - 0.5}) == normal
    assert pause_restore({**ok, "until": 100.0}) == normal  # ends just now
    assert pause_restore({**ok, "until": 100.5, "since": 70.5})[0] == "paused"


# -- the catalogue check and the unknown kinds, in words ---------------------------------------------


@pytest.mark.parametrize("kind, change, message", [
    (AlarmKind.BASELINE_SET, {"latch": Latch.UNTIL_ACK},
     "alarm catalogue: info row baseline_set cannot latch or escalate"),
    (AlarmKind.BASELINE_SET, {"escalate_to": Priority.HIGH},
     "alarm catalogue: info row baseline_set cannot latch or escalate"),
    (AlarmKind.BASELINE_SET, {"momentary": True},
     "alarm catalogue: info row baseline_set cannot latch or escalate"),
    (AlarmKind.AMPLITUDE_DECREASE, {"kind": AlarmKind.LEAD_OFF},
     "alarm catalogue: row amplitude_decrease describes lead_off"),
    (AlarmKind.AMPLITUDE_DECREASE, {"momentary": True}, "alarm catalogue: momentary amplitude_decrease must latch"),
    (AlarmKind.AMPLITUDE_DECREASE, {"escalate_to": Priority.LOW},
     "alarm catalogue: amplitude_decrease would escalate downwards"),
    (AlarmKind.AMPLITUDE_DECREASE, {"message": ""}, "alarm catalogue: amplitude_decrease needs a title and a message"),
])
def test_an_inconsistent_catalogue_is_refused_in_words(kind, change, message):
    cat = {**CATALOG, kind: dataclasses.replace(CATALOG[kind], **change)}
    with pytest.raises(ValueError) as info:
        check_catalog(cat)
    assert str(info.value) == message


def test_the_manager_names_the_kinds_of_its_own_catalogue():
    only = {LOS: CATALOG[LOS], AMP: CATALOG[AMP]}
    m = AlarmManager(ManualClock(), Settings(), catalog=only)
    with pytest.raises(ValueError) as info:
        m.raise_condition(LINK, KEY)
    assert str(info.value) == "unknown alarm kind <AlarmKind.BOARD_LINK_LOST: 'board_link_lost'>; known kinds: " \
        "loss_of_signal, amplitude_decrease"


# -- the mapping from rule events ----------------------------------------------------------------


def test_a_condition_of_both_sides_is_worded_so():
    event = RuleEvent(t_s=1.0, kind=EventKind.NEUROMUSCULAR_BLOCKADE_SUSPECTED, side=Side.L, site=Site.VAGUS,
                      priority=Priority.MEDIUM, stimulus_index=1, detail={})
    assert where(event) == "both sides"
    assert where(dataclasses.replace(event, kind=EventKind.LOSS_OF_SIGNAL)) == "left vagus"


def test_a_rule_event_without_a_mapping_is_refused_loudly(monkeypatch):
    table = {k: v for k, v in mapping.RULE_EVENT_TABLE.items() if k is not EventKind.LOSS_OF_SIGNAL}
    monkeypatch.setattr(mapping, "RULE_EVENT_TABLE", table)
    event = RuleEvent(t_s=1.0, kind=EventKind.LOSS_OF_SIGNAL, side=Side.L, site=Site.VAGUS,
                      priority=Priority.HIGH, stimulus_index=1, detail={})
    _clock, m, _seen = make()
    with pytest.raises(ValueError) as info:
        mapping.apply_rule_event(m, event)
    assert str(info.value) == "rule event <EventKind.LOSS_OF_SIGNAL: 'loss_of_signal'> has no alarm mapping"
    assert m.state().alarms == ()


# -- a snapshot that does not say when an alarm became unacknowledged ------------------------------


def row(**change):
    base = {"kind": "amplitude_decrease", "key": "VAGUS-R", "seq": 1, "priority": "medium", "message": "m",
            "age_s": 5.0, "unack_age_s": None, "condition_active": True, "acknowledged": False,
            "escalated": False}
    return {**base, **change}


def test_an_unacknowledged_alarm_saved_without_its_time_sounds_and_escalates():
    clock, m, _seen = make(100.0)
    m.restore({"version": 1, "alarms": [row()]})
    v = m.state().alarms[0]
    assert (v.since, v.unacknowledged_since, v.audible) == (95.0, 95.0, True)
    assert m.state().sounding_id == v.id
    clock.advance(ESC - 5.0)
    m.tick()
    assert m.state().alarms[0].escalated is True


def test_an_acknowledged_alarm_saved_with_an_unacknowledged_time_stays_silent():
    clock, m, _seen = make(100.0)
    m.restore({"version": 1, "alarms": [row(acknowledged=True, unack_age_s=5.0, condition_active=False,
                                            kind="loss_of_signal", priority="high")]})
    v = m.state().alarms[0]
    assert (v.acknowledged, v.unacknowledged_since, v.audible, m.state().sounding) == (True, None, False, None)
    clock.advance(2.0)
    m.raise_condition(LOS, "VAGUS-R")  # comes back: a new unacknowledged period, it sounds again
    v = m.state().alarms[0]
    assert (v.unacknowledged_since, v.audible, v.escalated) == (102.0, True, False)


def test_the_alarm_view_json_has_the_details_in_plain_values():
    clock, m, _seen = make()
    aid = m.raise_condition(LOS, KEY, detail={"sides": (1, 2), "p": Priority.HIGH})
    assert m.state().by_id(aid).to_json()["detail"] == {"sides": [1, 2], "p": "high"}


def test_the_pause_tolerance_is_a_microsecond():
    tolerated = {"mode": "paused", "since": 0.0, "until": PAUSE + 1e-6, "duration": 30.0, "by": "nurse"}
    assert pause_restore(tolerated, now=PAUSE - 1.0)[0] == "paused"


def test_an_alarm_back_after_its_acknowledgement_keeps_both_its_times_across_a_restart():
    clock, m, _seen = make(100.0)
    aid = m.raise_condition(LOS, KEY)
    m.acknowledge(aid, who="nurse")
    m.clear_condition(LOS, KEY)
    clock.advance(3.0)
    m.raise_condition(LOS, KEY)  # unacknowledged again since 103, episode since 100
    clock.advance(2.0)
    state = m.to_state()
    for shift, expected in ((None, (1005.0, 1008.0)), (905.0, (1005.0, 1008.0)), (900.0, (1000.0, 1003.0))):
        clock2, m2, _seen2 = make(1010.0)
        m2.restore(state, shift=shift)
        v = m2.state().by_id(aid)
        assert (v.since, v.unacknowledged_since) == expected


def test_no_reminder_once_audio_is_back_on():
    clock, m, seen = make()
    m.audio_off(who="nurse")
    clock.advance(1.0)
    m.audio_on(who="nurse")
    clock.advance(REMIND)
    m.tick()
    assert seen[-1].transition == "audio_on" and m.state().audio.next_reminder_in_s is None
    m.audio_off(who="nurse")
    m.pause_audio(who="nurse")
    clock.advance(REMIND)
    assert m.state().audio.next_reminder_in_s is None
    m.tick()
    assert [e.transition for e in seen[-2:]] == ["audio_paused", "audio_pause_expired"]
    m.audio_off(who="nurse")  # the reminder interval starts again at the switch off
    assert m.state().audio.next_reminder_in_s == REMIND
