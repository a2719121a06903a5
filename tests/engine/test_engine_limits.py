"""Protected limits through the API: relaxing the event threshold or an alarm limit needs a
confirmation, is journaled with old and new values, stays on the monitor until restored, and
a response that only the lowered threshold makes one is never a plain "response"."""

from __future__ import annotations

from hypothesis import given, settings as hsettings, strategies as st

from app.engine.limits import PROTECTED, needs_confirmation, relaxed
from app.settings import SCHEMA, Settings
from engine_testkit import stepped

TH = "analysis.event_threshold_uV"


def _case(tmp_path, seed=21, **kw):
    s = stepped(tmp_path, seed=seed, **kw)
    s.run_for(0.3)
    case_id = s.must("case.start", client="ui", patient_id="PSN-LIM", planned_sides=["L"])["case_id"]
    return s, case_id


def _changes(s, case_id):
    return [e.payload for e in s.monitor.journal.entries(case_id, kinds=["setting_changed"], blobs=False)]


def test_lowering_the_threshold_needs_a_confirmation_and_stays_visible_until_restored(tmp_path):
    s, case_id = _case(tmp_path, fake_analysis=True)
    reply = s.command("settings.set", client="ui", changes={TH: 60.0})
    err = reply["error"]
    assert err["code"] == "needs_confirmation" and err["setting"] == TH
    assert "Event threshold" in err["message"] and "100 µV" in err["message"] and '"confirm": true' in err["message"]
    assert err["settings"] == [{**err["settings"][0], "setting": TH, "old": 100.0, "new": 60.0, "default": 100.0,
                                "why": ["relaxes"], "alarms": []}]
    st = s.must("state.get")
    assert st["threshold_uV"] == 100.0 and st["limits"] == [] and _changes(s, case_id) == []

    s.run_for(2.0)
    s.must("settings.set", client="ui", changes={TH: 60.0}, confirm=True)
    st = s.must("state.get")
    assert st["threshold_uV"] == 60.0 and st["threshold_default_uV"] == 100.0
    (lim,) = st["limits"]
    assert lim == {**lim, "setting": TH, "value": 60.0, "default": 100.0, "lowered": True,
                   "text": "threshold 60 µV, lowered"}
    since = lim["since_s"]
    assert since >= 2.0
    change = _changes(s, case_id)[-1]
    assert change == {**change, "key": TH, "old": 100.0, "new": 60.0, "default": 100.0, "relaxed": True,
                      "confirmed": True, "why": ["relaxes"], "who": "ui"}
    ev = [e for e in s.events if e.get("kind") == "limit_relaxed"][-1]
    assert "lowered to 60 µV (default 100 µV), was 100 µV (ui, confirmed)" in ev["message"]

    # towards the default: no confirmation, still shown (since when it was first lowered)
    s.run_for(1.0)
    s.must("settings.set", client="ui", changes={TH: 80.0})
    (lim,) = s.must("state.get")["limits"]
    assert lim["value"] == 80.0 and lim["since_s"] == since and lim["text"] == "threshold 80 µV, lowered"
    # lower again: confirmation again
    assert s.command("settings.set", changes={TH: 70.0})["error"]["code"] == "needs_confirmation"
    # restored: gone from the monitor, announced
    s.must("settings.set", client="ui", changes={TH: 100.0})
    assert s.must("state.get")["limits"] == []
    assert [e for e in s.events if e.get("kind") == "limit_restored"]
    # stricter than the default: no confirmation, nothing to show
    s.must("settings.set", changes={TH: 150.0})
    assert s.must("state.get")["limits"] == []


def test_alarm_limits_relaxed_either_way_need_it_and_a_profile_s_relaxed_limit_is_shown(tmp_path):
    s, case_id = _case(tmp_path, fake_analysis=True)
    for key, relaxing, stricter in (("rules.los_consecutive", 3, 1), ("rules.combined_latency_pct", 120.0, 105.0),
                                    ("rules.amplitude_decrease_pct", 40.0, 60.0),
                                    ("rules.recovery_consecutive", 2, 4), ("alarms.audio_pause_s", 180.0, 60.0),
                                    ("audio.alarm_volume_floor_pct", 20.0, 60.0)):
        assert s.command("settings.set", changes={key: relaxing})["error"]["code"] == "needs_confirmation", key
        s.must("settings.set", changes={key: stricter})
        s.must("settings.set", changes={key: relaxing}, confirm=True)
        assert key in [x["setting"] for x in s.must("state.get")["limits"]], key
    # several at once: one refusal naming each; nothing applied
    reply = s.command("settings.set", changes={"rules.los_end_consecutive": 1, TH: 50.0, "audio.volume_pct": 30.0})
    assert {x["setting"] for x in reply["error"]["settings"]} == {"rules.los_end_consecutive", TH}
    assert s.must("state.get")["threshold_uV"] == 100.0 and s.must("state.get")["volume_pct"] == 70.0
    # the case ends: the settings go back, and with them every indication
    s.must("case.close")
    assert s.must("state.get")["limits"] == []


def test_under_a_loss_of_signal_changing_the_threshold_needs_it_and_a_weak_response_is_qualified(tmp_path):
    # the engine's labelling under test: a plain peak-to-peak measurement (the real analysis
    # also voids a trace that does not stand out of the noise)
    s, case_id = _case(tmp_path, seed=22, fake_analysis=True)
    s.board.control("probe", contact="nerve", site="RLN", side="L", position=0.8)
    s.must("probe.site", site="RLN", side="L")
    s.must("stim.output", output="probe", on=True)
    s.run_for(1.0)
    # stretched distal to the probe: a 45-95 µV trace at the probe, a loss of signal
    s.board.control("traction", side="L", site="RLN", severity=0.93, onset_s=0.3, position=0.3)
    s.run_for(4.0)
    st = s.must("state.get")
    assert st["los"]["L"]["active"], st["los"]
    weak = st["last"]["L"]
    assert not weak["response"] and 30.0 < weak["amplitude_uV"] < 100.0, weak
    # any change while the loss is active needs a confirmation: raising it too; back to the default never
    for value in (150.0, 40.0):
        err = s.command("settings.set", client="ui", changes={TH: value})["error"]
        assert err["code"] == "needs_confirmation" and "alarm_active" in err["settings"][0]["why"], err
        assert err["settings"][0]["alarms"] == ["loss_of_signal"] and "loss of signal is active" in err["message"]
    s.must("settings.set", client="ui", changes={TH: 40.0}, confirm=True)
    s.run_for(1.0)
    st = s.must("state.get")
    last = st["last"]["L"]
    assert last["response"] and last["amplitude_uV"] < 100.0 and last["lowered_threshold"] is True, last
    assert st["limits"][0]["text"] == "threshold 40 µV, lowered"
    assert st["los"]["L"]["active"]  # the banner stays; the weak trace beneath it says "lowered"
    assert s.must("settings.set", client="ui", changes={TH: 100.0})  # back to the default: no confirmation
    s.run_for(0.5)
    last = s.must("state.get")["last"]["L"]
    assert not last["response"] and last["lowered_threshold"] is False
    change = _changes(s, case_id)
    assert [(c["old"], c["new"], c.get("confirmed")) for c in change] == [(100.0, 40.0, True), (40.0, 100.0, False)]
    assert change[0]["why"] == ["relaxes", "alarm_active"]


def test_every_protected_setting_exists_and_its_default_is_not_relaxed():
    for key in PROTECTED:
        assert key in SCHEMA and SCHEMA[key].live, key
        assert not relaxed(key, SCHEMA[key].default), key


@hsettings(max_examples=300, deadline=None)
@given(key=st.sampled_from(sorted(PROTECTED)), a=st.floats(0, 1), b=st.floats(0, 1), alarm=st.booleans())
def test_confirmation_is_asked_exactly_for_relaxing_further_or_under_a_related_alarm(key, a, b, alarm):
    spec, p = SCHEMA[key], PROTECTED[key]
    lo, hi = spec.minimum, spec.maximum

    def value(x):
        v = lo + x * (hi - lo)
        return int(round(v)) if spec.kind is int else round(v, 3)

    old, new = value(a), value(b)
    current = Settings().with_changes({key: old}, "test")
    if alarm:  # a related alarm (any alarm for the alarm signals' settings)
        kinds = [p.alarms[0] if p.alarms[0] != "*" else "lead_off"]
    else:  # none, or one of another rule
        kinds = [] if "*" in p.alarms else [k for k in ("combined_event", "poor_baseline") if k not in p.alarms][:1]
    asked = needs_confirmation({key: new}, current, kinds)
    further = p.relaxed(new) and ((new < old) if p.relaxes == "lower" else (new > old))
    expected = new != old and (further or (alarm and new != p.default))
    assert bool(asked) == expected, (key, old, new, asked)
    if asked:
        assert asked[0]["old"] == old and asked[0]["new"] == new and asked[0]["default"] == p.default
