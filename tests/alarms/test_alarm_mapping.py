"""Rule events to alarms, and the catalogue itself."""

from __future__ import annotations

import dataclasses

import pytest

from app.alarms import CATALOG, AlarmKind, AlarmManager, Category, Latch, apply_rule_event
from app.alarms.catalog import check_catalog
from app.alarms.mapping import RULE_EVENT_TABLE
from app.model import EventKind, Priority, RuleEvent, Side, Site
from app.settings import Settings
from firmware_bridge.clock import ManualClock


def ev(kind: EventKind, side=Side.L, site=Site.VAGUS, **detail) -> RuleEvent:
    return RuleEvent(t_s=12.05, kind=kind, side=side, site=site, priority=Priority.HIGH,
                     stimulus_index=7, detail=detail)


def make():
    clock = ManualClock(0.0)
    return clock, AlarmManager(clock, Settings())


EXPECTED = [
    (EventKind.LOSS_OF_SIGNAL, "loss_of_signal", "high", "physiological", "until_reset", True),
    (EventKind.COMBINED_EVENT, "combined_event", "high", "physiological", "until_reset", True),
    (EventKind.AMPLITUDE_DECREASE, "amplitude_decrease", "medium", "physiological", "none", True),
    (EventKind.NO_CURRENT, "no_current", "medium", "technical", "until_ack", False),
    (EventKind.POOR_BASELINE, "poor_baseline", "low", "physiological", "until_ack", False),
]


@pytest.mark.parametrize("event,kind,priority,category,latch,active", EXPECTED)
def test_raising_events(event, kind, priority, category, latch, active):
    _clock, m = make()
    ids = apply_rule_event(m, ev(event, amplitude_uV=42.0))
    st = m.state()
    assert ids == [f"{kind}:VAGUS-L"]
    a = st.alarms[0]
    assert (a.kind, a.priority, a.category, a.latch, a.condition_active) == (
        kind, priority, category, latch, active)
    assert a.message.startswith("Left vagus (VAGUS-L): ")
    assert "amplitude 42 µV" in a.message
    assert a.detail["stimulus_index"] == 7 and a.detail["rule_t_s"] == 12.05
    assert st.sounding == priority
    assert m.log[-1].who == "rules"


def test_no_current_message_tells_what_to_check():
    _clock, m = make()
    apply_rule_event(m, ev(EventKind.NO_CURRENT, side=Side.R, site=Site.RLN))
    text = m.state().alarms[0].message
    for word in ("probe contact", "return/ground leads", "dry field"):
        assert word in text
    assert "Right recurrent laryngeal nerve (RLN-R)" in text


def test_amplitude_decrease_reads_check_tube_position():
    assert CATALOG[AlarmKind.AMPLITUDE_DECREASE].title == "Check tube position"
    assert "check tube" in CATALOG[AlarmKind.POOR_BASELINE].title.lower()


def test_recovery_ends_the_condition_but_the_latched_alarm_stays():
    _clock, m = make()
    apply_rule_event(m, ev(EventKind.LOSS_OF_SIGNAL))
    apply_rule_event(m, ev(EventKind.AMPLITUDE_DECREASE, side=Side.R))
    ids = apply_rule_event(m, ev(EventKind.SIGNAL_RECOVERED))
    assert ids == ["loss_of_signal:VAGUS-L", "signal_recovered:VAGUS-L"]
    st = m.state()
    los = st.by_id("loss_of_signal:VAGUS-L")
    assert los.latched and not los.acknowledged and los.audible  # still sounds: not acknowledged
    assert st.by_id("amplitude_decrease:VAGUS-R").condition_active  # other side untouched
    assert st.notices[-1].kind == "signal_recovered"
    apply_rule_event(m, ev(EventKind.SIGNAL_RECOVERED, side=Side.R))
    assert m.state().by_id("amplitude_decrease:VAGUS-R") is None  # not latched: gone
    m.acknowledge("loss_of_signal:VAGUS-L", who="nurse")
    assert m.reset(who="surgeon") == 1
    assert m.state().alarms == ()


def test_recovery_at_another_site_leaves_the_loss_alone():
    _clock, m = make()
    apply_rule_event(m, ev(EventKind.LOSS_OF_SIGNAL, site=Site.RLN))
    apply_rule_event(m, ev(EventKind.SIGNAL_RECOVERED, site=Site.VAGUS))
    assert m.state().by_id("loss_of_signal:RLN-L").condition_active


@pytest.mark.parametrize("event", [EventKind.NONRECURRENT_NERVE_SUSPECTED, EventKind.BASELINE_SET])
def test_info_events_are_notices(event):
    _clock, m = make()
    apply_rule_event(m, ev(event, side=Side.R))
    st = m.state()
    assert st.alarms == () and st.sounding is None
    assert st.notices[-1].kind == event.value and st.notices[-1].key == "VAGUS-R"


def test_every_rule_event_kind_is_mapped():
    assert set(RULE_EVENT_TABLE) == set(EventKind)


def test_two_sides_are_two_alarms():
    _clock, m = make()
    apply_rule_event(m, ev(EventKind.LOSS_OF_SIGNAL, side=Side.L))
    apply_rule_event(m, ev(EventKind.LOSS_OF_SIGNAL, side=Side.R))
    assert len(m.state().alarms) == 2
    apply_rule_event(m, ev(EventKind.LOSS_OF_SIGNAL, side=Side.R))  # same episode: no new alarm
    assert len(m.state().alarms) == 2


def test_catalogue_categories_match_the_design():
    physio = {k for k, d in CATALOG.items() if d.category is Category.PHYSIOLOGICAL and not d.is_info}
    tech = {k for k, d in CATALOG.items() if d.category is Category.TECHNICAL}
    assert physio == {AlarmKind.LOSS_OF_SIGNAL, AlarmKind.COMBINED_EVENT,
                      AlarmKind.AMPLITUDE_DECREASE, AlarmKind.NEUROMUSCULAR_BLOCKADE_SUSPECTED,
                      AlarmKind.POOR_BASELINE}
    assert tech == {AlarmKind.BOARD_LINK_LOST, AlarmKind.BOARD_FAULT, AlarmKind.LEAD_OFF,
                    AlarmKind.NO_CURRENT, AlarmKind.STORAGE_PROBLEM, AlarmKind.AUDIO_FAILURE,
                    AlarmKind.ENGINE_FAULT}
    assert set(CATALOG) == set(AlarmKind)
    assert not any("ui" in k.value for k in AlarmKind)
    assert CATALOG[AlarmKind.LOSS_OF_SIGNAL].latch is Latch.UNTIL_RESET
    assert CATALOG[AlarmKind.COMBINED_EVENT].latch is Latch.UNTIL_RESET
    for d in CATALOG.values():
        assert d.title and d.message
        if not d.is_info:
            assert d.action


@pytest.mark.parametrize("change,match", [
    ({"escalate_to": Priority.LOW}, "downwards"),
    ({"momentary": True, "latch": Latch.NONE}, "must latch"),
    ({"title": ""}, "title"),
])
def test_check_catalog_refuses_inconsistent_rows(change, match):
    d = dataclasses.replace(CATALOG[AlarmKind.AMPLITUDE_DECREASE], **change)
    cat = {**CATALOG, AlarmKind.AMPLITUDE_DECREASE: d}
    with pytest.raises(ValueError, match=match):
        check_catalog(cat)
    with pytest.raises(ValueError, match=match):
        AlarmManager(ManualClock(), Settings(), catalog=cat)


# -- the blockade (both sides) and a loss of signal that continues --------------------------
def test_blockade_replaces_the_amplitude_decrease_on_both_vagi_and_has_one_key():
    _clock, m = make()
    apply_rule_event(m, ev(EventKind.AMPLITUDE_DECREASE, side=Side.L))
    apply_rule_event(m, ev(EventKind.AMPLITUDE_DECREASE, side=Side.R))
    apply_rule_event(m, ev(EventKind.LOSS_OF_SIGNAL, side=Side.L, site=Site.RLN))
    sides = {"L": {"amplitude_pct": 38.2, "reference": "aps_baseline"}, "R": {"amplitude_pct": 21.0, "reference": "V1"}}
    ids = apply_rule_event(m, ev(EventKind.NEUROMUSCULAR_BLOCKADE_SUSPECTED, side=Side.R, sides=sides))
    assert ids == ["amplitude_decrease:VAGUS-L", "amplitude_decrease:VAGUS-R", "neuromuscular_blockade_suspected:BOTH"]
    st = m.state()
    assert st.by_id("amplitude_decrease:VAGUS-L") is None and st.by_id("amplitude_decrease:VAGUS-R") is None
    assert st.by_id("loss_of_signal:RLN-L").condition_active  # a loss of signal is not replaced
    nmb = st.by_id("neuromuscular_blockade_suspected:BOTH")
    assert (nmb.priority, nmb.category, nmb.latch) == ("medium", "physiological", "none")
    assert nmb.message.startswith("Both sides (BOTH): ")
    assert "left 38 % of APS baseline" in nmb.message and "right 21 % of V1" in nmb.message
    d = CATALOG[AlarmKind.NEUROMUSCULAR_BLOCKADE_SUSPECTED]
    assert "train-of-four" in d.title and "train-of-four and relaxant with the anaesthetist" in d.action
    assert "not a nerve injury" in d.message and "tube" not in d.message.lower()


def test_a_recovery_ends_the_blockade_only_when_it_names_it():
    _clock, m = make()
    apply_rule_event(m, ev(EventKind.NEUROMUSCULAR_BLOCKADE_SUSPECTED))
    apply_rule_event(m, ev(EventKind.SIGNAL_RECOVERED, site=Site.RLN, recovered=["loss_of_signal"]))
    assert m.state().by_id("neuromuscular_blockade_suspected:BOTH").condition_active
    ids = apply_rule_event(m, ev(EventKind.SIGNAL_RECOVERED, side=Side.R,
                                 recovered=["neuromuscular_blockade_suspected"]))
    assert "neuromuscular_blockade_suspected:BOTH" in ids
    assert m.state().by_id("neuromuscular_blockade_suspected:BOTH") is None  # latch none: gone


def test_amplitude_decrease_advice_names_tube_secretions_relaxant_in_that_order():
    d = CATALOG[AlarmKind.AMPLITUDE_DECREASE]
    for text in (d.message, d.action):
        low = text.lower()
        assert low.index("tube") < low.index("secretions") < low.index("relaxant")


def test_a_continued_loss_of_signal_is_the_same_alarm_never_a_new_onset():
    clock, m = make()
    apply_rule_event(m, ev(EventKind.LOSS_OF_SIGNAL, site=Site.RLN))
    m.acknowledge("loss_of_signal:RLN-L", who="nurse")
    n = len(m.log)
    # still present (no recovery in between): nothing at all changes
    assert apply_rule_event(m, ev(EventKind.LOSS_OF_SIGNAL_CONTINUED, site=Site.RLN)) == ["loss_of_signal:RLN-L"]
    assert len(m.log) == n and m.state().by_id("loss_of_signal:RLN-L").acknowledged
    # after a recovery ended the condition, the same alarm is active again (not a new one)
    apply_rule_event(m, ev(EventKind.SIGNAL_RECOVERED, site=Site.RLN, recovered=["loss_of_signal"]))
    since = m.state().by_id("loss_of_signal:RLN-L").since
    clock.advance(20.0)
    apply_rule_event(m, ev(EventKind.LOSS_OF_SIGNAL_CONTINUED, site=Site.RLN))
    a = m.state().by_id("loss_of_signal:RLN-L")
    assert a.condition_active and a.since == since
    assert [e.transition for e in m.log if e.alarm_id == "loss_of_signal:RLN-L"].count("raised") == 1
