"""The nurse's words (no display): every setting has a name and a group, engine text and
refusals lose their program terms, every event line says what happened in words, and the
case form says every problem of an entry and accepts exactly what the engine accepts."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from app import settings as settings_mod
from app.api import protocol as p
from app.ui import forms as F
from app.ui import present as P
from app.ui import words as W


def test_every_setting_of_the_schema_has_a_name_and_a_nurses_group():
    groups = {g for g, _ in W.SETTING_GROUPS}
    for key in settings_mod.SCHEMA:
        info = W.SETTINGS.get(key)
        assert info is not None, f"{key} has no name in app/ui/words.py"
        assert info.group in groups and info.name and "." not in info.name and "_" not in info.name, key
    for g in ("stimulation", "response", "alarms", "sound", "display"):
        assert any(i.group == g for i in W.SETTINGS.values()), g
    # a setting added to the engine later still shows without its key
    assert W.setting_info("new.thing_mA", "a new thing").name == "A new thing"


def test_range_and_value_words():
    spec = {"key": "stim.probe_current_mA", "unit": "mA", "minimum": 0.1, "maximum": 10.0, "default": 1.0,
            "kind": "float"}
    assert W.range_words(spec) == "0.1-10 mA, default 1 mA"
    assert W.fmt_value(100.0, "uV") == "100 µV" and W.fmt_value(True, "", "bool") == "on"
    assert W.fmt_value(50, "%") == "50 %"


def test_engine_text_in_plain_words():
    text = W.plain("Left vagus (VAGUS-L): lead off: L_POS; imbalance above 1 kOhm: side R; "
                   "removed: no_current:RLN-R; see stim.probe_current_mA; 27 uV")
    for bad in ("VAGUS-L", "L_POS", "kOhm", "side R", "no_current", "stim.probe", " uV"):
        assert bad not in text, (bad, text)
    for good in ("Left vagus", "left electrode (+)", "kΩ", "right side", "No stimulus current, right RLN",
                 "'Probe current, nerve check'", "27 µV"):
        assert good in text, (good, text)


def test_refusals_name_the_field_in_words_without_patterns():
    msg = ("case.start: argument patient_id is 'P 12'; must be text up to 32 characters matching "
           "[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
    text = W.refusal_words("invalid_argument", msg, {"argument": "patient_id"})
    assert text.startswith("Patient ID: 'P 12' is not accepted") and "letters, digits and - _ ." in text
    assert "[" not in text and "patient_id" not in text and "case.start" not in text
    text = W.refusal_words("setting_rejected", "setting alarms.audio_pause_s (s): 9999 is out of range; allowed "
                           "10-300 s", {"setting": "alarms.audio_pause_s"})
    assert text == "Audio pause: 9999 is out of range; allowed 10-300 s"
    text = W.refusal_words("invalid_argument", "stim.set: argument current_mA (mA) is 12, out of range; must be a "
                           "number 0-10 mA", {"argument": "current_mA"})
    assert text == "Current: 12 is out of range; allowed: a number 0-10 mA"


ALARM_EVENTS = [
    {"category": "alarm", "kind": k, "priority": "high", "side": "L", "site": "VAGUS",
     "detail": {"alarm": "loss_of_signal:VAGUS-L", "kind": "loss_of_signal", "who": who, "to_priority": "high",
                "unacknowledged_s": 61.0}, "message": f"{k}: loss_of_signal:VAGUS-L", "t_s": 12.0}
    for k, who in (("raised", "rules"), ("acknowledged", "ui#2"), ("removed", "ui#2"), ("reset", "footswitch"),
                   ("escalated", "timer"), ("condition_ended", "rules"), ("cleared", "rules"), ("re_raised", "rules"))
] + [{"category": "alarm", "kind": k, "detail": {"who": "ui#2"}, "message": f"{k}: alarm audio", "t_s": 3.0}
     for k in ("audio_paused", "audio_off", "audio_on", "audio_pause_expired", "audio_reminder", "acknowledged")]


def test_every_alarm_history_line_says_what_in_words():
    for ev in ALARM_EVENTS:
        line = W.event_line(ev)
        assert not line.rstrip().endswith(":"), line
        for bad in ("VAGUS-L", "loss_of_signal", "ui#2", "_"):
            assert bad not in line, (bad, line)
    lines = {ev["kind"]: W.event_line(ev) for ev in ALARM_EVENTS[:8]}
    assert "LOSS OF SIGNAL, left vagus: acknowledged at the touchscreen" in lines["acknowledged"]
    assert "removed from the list" in lines["removed"] and "with the footswitch" in lines["reset"]


def test_the_banner_and_the_list_show_the_newest_of_the_highest_priority_first():
    old = {"id": "ce", "priority": "high", "raised_t_s": 10.0}
    new = {"id": "los", "priority": "high", "raised_t_s": 20.0}
    med = {"id": "nc", "priority": "medium", "raised_t_s": 30.0}
    acked = {"id": "los2", "priority": "high", "raised_t_s": 40.0, "acknowledged": True}
    assert [a["id"] for a in P.display_order([old, med, acked, new])] == ["los", "ce", "los2", "nc"]


def test_the_visible_tone_follows_the_engines_sounds():
    m = {"source": "PROBE", "set_mA": 1.0, "delivered_mA": 1.0, "valid": True, "response": True}
    assert P.tone_of(m) == "response"
    assert P.tone_of(dict(m, response=False)) == "tick"
    assert P.tone_of(dict(m, delivered_mA=0.0)) == "buzz"
    assert P.tone_of(dict(m, source="APS")) is None and P.tone_of(dict(m, valid=False)) is None
    assert P.tone_level(100, 100) == 0.25 and P.tone_level(2000, 100) == 1.0
    assert P.tone_level(27, 100) < P.tone_level(150, 100) < P.tone_level(900, 100)


ID_RULE = F.CASE_FIELDS["patient"]


@given(st.text(alphabet=F.ID_CHARS, min_size=1, max_size=40))
def test_the_patient_id_form_accepts_exactly_what_the_engine_accepts(text):
    errors = F.field_errors(ID_RULE, text)
    spec = p.COMMANDS["case.start"].arg("patient_id")
    try:
        spec.check("case.start", text.strip())
        engine_ok = True
    except p.ApiError:
        engine_ok = False
    assert (not errors) == engine_ok, (text, errors)


@given(st.text(min_size=1, max_size=20).filter(lambda t: t.strip() and any(c not in F.ID_CHARS for c in t.strip())))
def test_a_patient_id_with_other_characters_names_them(text):
    errors = F.field_errors(ID_RULE, text)
    assert errors and any("not allowed" in e for e in errors)


def test_all_problems_of_a_field_are_said_and_no_side_is_a_problem():
    errors = F.case_errors({"patient": "-P 12!", "tube_size": "99", "tube_depth": "abc"}, [])
    assert errors["patient"] == ["space, ! not allowed", "must start with a letter or digit"]
    assert errors["tube_size"] == ["99 mm is outside 5-10 mm"]
    assert errors["tube_depth"] == ["not a number"]
    assert errors["sides"] == ["choose at least one side"]
    assert "surgeon" not in errors
    assert F.case_errors({"patient": "P-1"}, ["L"]) == {}
    assert "Patient ID: space, ! not allowed; must start with a letter or digit." in F.summary(errors)


def test_every_keyboard_offers_only_what_its_fields_accept():
    for layout, rows in F.KEYBOARDS.items():
        keys = {c for row in rows for c in row}
        allowed = set(F.KEYBOARD_CHARS[layout])
        assert {c.lower() for c in keys} | keys <= allowed | {c.upper() for c in allowed}, layout
    assert " " not in F.KEYBOARD_CHARS["id"] and set(F.KEYBOARD_CHARS["numeric"]) == set(string.digits + ".")


def test_a_one_sided_procedure_names_its_side():
    assert F.sides_for_procedure("Hemithyroidectomy, left") == ["L"]
    assert F.sides_for_procedure("Hemithyroidectomy, right") == ["R"]
    assert F.sides_for_procedure("Total thyroidectomy") is None
    assert F.sides_for_procedure(None) is None


def test_the_vagal_percentage_stays_while_the_probe_stimulates_the_same_side():
    # the state has none while the last stimulus of the side is a probe one: the stream's last
    set_no_pct = {"baseline_uV": 650.0, "collecting": False, "amplitude_pct": None, "latency_pct": None}
    assert P.aps_percent(set_no_pct, (812.0, 84.0, 103.0)) == (84.0, 103.0)
    assert P.aps_percent(dict(set_no_pct, amplitude_pct=90.0, latency_pct=101.0), (1.0, 84.0, 103.0)) == (90.0, 101.0)
    assert P.aps_percent(dict(set_no_pct, collecting=True), (1.0, 84.0, 103.0)) == (None, None)
    assert P.aps_percent({"baseline_uV": None}, (1.0, 84.0, 103.0)) == (None, None)
    assert P.aps_percent(set_no_pct, None) == (None, None)
