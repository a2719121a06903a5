"""Property tests: random sequences of conditions, operator actions and time."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from app.alarms import AlarmKind, AlarmManager, alarm_id
from app.settings import Settings
from firmware_bridge.clock import ManualClock

KINDS = [k for k in AlarmKind if k not in (AlarmKind.SIGNAL_RECOVERED, AlarmKind.BASELINE_SET,
                                           AlarmKind.NONRECURRENT_NERVE_SUSPECTED)]
KEYS = ["VAGUS-L", "RLN-R"]

op = st.one_of(
    st.tuples(st.just("raise"), st.sampled_from(KINDS), st.sampled_from(KEYS)),
    st.tuples(st.just("clear"), st.sampled_from(KINDS), st.sampled_from(KEYS)),
    st.tuples(st.just("ack"), st.sampled_from(KINDS + [None]), st.sampled_from(KEYS)),
    st.tuples(st.just("reset"), st.sampled_from(KINDS + [None]), st.sampled_from(KEYS)),
    st.tuples(st.just("pause"), st.none(), st.none()),
    st.tuples(st.just("off"), st.none(), st.none()),
    st.tuples(st.just("on"), st.none(), st.none()),
    st.tuples(st.just("wait"), st.floats(0, 200), st.none()),
)


def apply(m: AlarmManager, clock: ManualClock, o) -> None:
    name, a, b = o
    if name == "raise":
        m.raise_condition(a, b, who="p")
    elif name == "clear":
        m.clear_condition(a, b, who="p")
    elif name == "ack":
        m.acknowledge(None if a is None else alarm_id(a, b), who="p")
    elif name == "reset":
        m.reset(None if a is None else alarm_id(a, b), who="p")
    elif name == "pause":
        m.pause_audio(who="p")
    elif name == "off":
        m.audio_off(who="p")
    elif name == "on":
        m.audio_on(who="p")
    else:
        clock.advance(a)
    m.tick()


@settings(max_examples=150, deadline=None)
@given(st.lists(op, max_size=40))
def test_invariants_hold_after_any_sequence(ops):
    clock = ManualClock(0.0)
    seen = []
    m = AlarmManager(clock, Settings(), on_log=seen.append)
    for o in ops:
        apply(m, clock, o)
        s = m.state()
        json.dumps(s.to_json())
        # Display order: priority rank never decreases down the list.
        ranks = [("high", "medium", "low").index(a.priority) for a in s.alarms]
        assert ranks == sorted(ranks)
        # An unacknowledged high alarm always sounds unless a pause that began after it covers it.
        for a in s.alarms:
            if a.priority == "high" and not a.acknowledged:
                covered = s.audio.mode == "paused" and a.unacknowledged_since <= s.audio.since
                assert covered or s.sounding == "high", (a, s.audio)
            if a.acknowledged:
                assert not a.audible and not a.escalated
            if not a.condition_active and a.latch == "none":
                raise AssertionError(f"non-latching alarm kept after its condition: {a}")
        # What sounds is the top audible alarm.
        audible = [a for a in s.alarms if a.audible]
        assert s.sounding == (audible[0].priority if audible else None)
        if s.audio.mode == "paused":
            assert 0 <= s.audio.remaining_s <= Settings()["alarms.audio_pause_s"]
    # Every transition reached on_log, in time order, with who.
    assert seen == list(m.log)
    times = [e.t for e in seen]
    assert times == sorted(times)
    assert all(e.who for e in seen)


@settings(max_examples=60, deadline=None)
@given(st.lists(op, max_size=30), st.floats(0, 1e6))
def test_restore_round_trip(ops, new_origin):
    clock = ManualClock(50.0)
    m = AlarmManager(clock, Settings())
    for o in ops:
        apply(m, clock, o)
    saved = json.loads(json.dumps(m.to_state()))
    clock2 = ManualClock(new_origin)
    m2 = AlarmManager(clock2, Settings())
    m2.restore(saved)
    a, b = m.state(), m2.state()
    keep = ("id", "priority", "acknowledged", "condition_active", "escalated", "seq", "latched")
    assert [[getattr(x, k) for k in keep] for x in a.alarms] == [
        [getattr(x, k) for k in keep] for x in b.alarms]
    assert b.audio.mode == "normal"
