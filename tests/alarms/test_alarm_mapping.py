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
                      AlarmKind.AMPLITUDE_DECREASE, AlarmKind.POOR_BASELINE}
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
