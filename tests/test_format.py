"""``app.format``: one rounding for every number, words for every key the product has."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app import format as F
from app.api import protocol as P
from app.model import EventKind, InvalidReason, Priority, Site, Step
from app.rules.procedure import CHECK_QUESTIONS, Check, Conclusion, Finding


@pytest.mark.parametrize("raw, shown", [
    (423.46, "423 µV"),  # the screen showed 423, the report 424 (423.46 -> 423.5 -> 424): rounded once now
    (423.5, "424 µV"),
    (705.5, "706 µV"),
    (0.4, "0 µV"),
    (None, "-"),
    (float("nan"), "-"),
])
def test_amplitude_is_rounded_once_half_up(raw, shown):
    assert F.amp_text(raw) == shown
    if raw is not None and raw == raw:
        assert F.amp_text(F.amplitude_uV(raw)) == shown  # the stored value prints the same


def test_latency_current_percent_text():
    assert F.lat_text(2.675) == "2.68 ms"  # what a person rounding the printed value gets
    assert F.lat_text(3.7638) == "3.76 ms"
    assert F.ma_text(1) == "1.00 mA"
    assert F.current_text(1.0, 0.984) == "1.00 mA (delivered 0.98 mA)"
    assert F.current_text(1.0, None) == "1.00 mA (delivered: not measured)"
    assert F.exact_ma_text(0.9845) == "0.985" and F.exact_ma_text(None) == ""
    assert F.pct_text(95.5) == "96 %" and F.mm_text(16.0) == "16 mm" and F.mm_text(16.25) == "16.3 mm"
    assert F.clock(3725.4) == "1:02:05" and F.duration(185) == "3 min 05 s"
    assert F.delivered_low(1.0, 0.94) and not F.delivered_low(1.0, 0.95) and not F.delivered_low(1.0, None)


@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))
def test_stored_values_print_as_they_were_computed(x):
    """Whatever a writer stores (the rounded value) prints the same as the raw value: the JSON,
    the report and the screen agree."""
    assert F.amp_text(F.amplitude_uV(x)) == F.amp_text(x)
    assert F.lat_text(F.latency_ms(x)) == F.lat_text(x)
    assert F.pct_text(F.percent(x)) == F.pct_text(x)


def test_every_key_of_the_product_has_words():
    for kind in EventKind:
        assert kind.value in F.EVENT_WORDS
    for check in Check:
        assert check.value in F.CHECK_WORDS and check.value in P.TS_CHECKS
    assert set(P.TS_CHECKS) == {c.value for c in CHECK_QUESTIONS}
    for c in Conclusion:
        assert c.value in F.CONCLUSION_WORDS
    for f in Finding:
        assert f.value in F.FINDING_WORDS
    for d in P.STAGING_DECISIONS:
        assert d in F.DECISION_WORDS
    for r in InvalidReason:
        assert r.value in F.INVALID_WORDS
    for p in Priority:
        assert p.value in F.PRIORITY_WORDS
    for s in Site:
        assert s.value in F.SITE_WORDS
    for s in [*Step, "L1", "L2"]:
        assert getattr(s, "value", s) in F.STEP_WORDS


def test_unknown_keys_still_read_as_words():
    assert F.words({}, "tube_position_ok") == "tube position ok"
    assert F.event_title("something_new") == "Something new"
    assert F.alarm_name("loss_of_signal:RLN-L") == "Loss of signal, left RLN"
    assert F.alarm_name("link_lost:") == "Link lost"
    assert F.alarm_name(None) == "alarm audio"


@pytest.mark.parametrize("action, detail, text", [
    ("probe.site", {"site": "RLN", "side": "L", "step": "R1"}, "Probe placed on the left RLN (step R1: RLN at "
                                                                 "identification)"),
    ("stim.output", {"output": "probe", "on": True}, "Probe stimulation on"),
    ("stim.set", {"output": "aps", "current_mA": 1.0, "rate_hz": 1.0},
     "Continuous vagal electrode set to 1.00 mA, 1 Hz"),
    ("mapping.result", {"side": "L", "position_mm": 16.0, "response": False, "label": "proximal"},
     "Mapping left at 16 mm (proximal): no response"),
    ("baseline.rebaseline", {"side": "R"}, "New continuous baseline requested, right side"),
    ("step.tag", {"step": "V2", "side": "R", "which": "next"}, "Step V2 right recorded from the next response"),
    ("case.update", {"tube_depth_cm": 21.0, "relaxant": "none"}, "Case data changed: tube depth, relaxant"),
])
def test_operator_actions_in_words_with_their_arguments(action, detail, text):
    assert F.action_text(action, detail) == text


def test_every_api_command_worded_without_its_key():
    for name in P.COMMANDS:
        text = F.action_text(name, {})
        assert "." not in text.split(":")[0] and "_" not in text, (name, text)


def test_settings_in_words_with_units():
    from app.settings import SCHEMA

    for key in F.SETTING_WORDS:
        assert key in SCHEMA or key == "rules.los_reentry_s", key
    assert F.setting_name("analysis.event_threshold_uV") == "Event threshold (response present)"
    assert F.setting_value(100.0, "uV") == "100 µV" and F.setting_value(True) == "on"
    assert F.setting_name("gpio.red_led_pin") == "Red led pin"
