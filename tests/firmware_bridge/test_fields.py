"""The field specification behind settings, API arguments, scenario expectations, journal
payloads and the virtual patient's conditions (``firmware_bridge.fields``)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.api import protocol as p
from app.record import entries
from app.settings import SettingError, setting
from firmware_bridge.fields import Field, FieldError
from firmware_bridge.sim.physiology import PhysiologyError, _check_range
from firmware_bridge.sim.scenario import ScenarioError, parse_scenario

CURRENT = Field("current_mA", "number", "mA", 0.0, 10.0)


def refused(spec: Field, value):
    with pytest.raises(FieldError) as info:
        spec.check(value)
    return info.value


def test_numbers_are_converted_and_refused_with_their_unit_and_range():
    assert CURRENT.check(2) == 2.0 and isinstance(CURRENT.check(2), float)
    err = refused(CURRENT, 11)
    assert err.reason == "range" and err.phrase == "is 11, out of range"
    assert str(err) == "current_mA (mA) is 11, out of range; must be a number 0-10 mA"
    assert refused(CURRENT, True).reason == "type"  # a bool is not a number
    assert refused(CURRENT, "2").reason == "type"  # JSON: text is not a number
    assert refused(CURRENT, math.nan).reason == "finite"
    assert refused(CURRENT, 10**400).reason == "big"


def test_integers_take_integral_numbers_only():
    width = Field("pulse_width_us", "int", "us", 50, 250)
    assert width.check(100.0) == 100 and isinstance(width.check(100.0), int)
    assert refused(width, 100.5).reason == "integer"
    assert refused(Field("n", "int", accept="exact"), 3.0).reason == "integer"  # a journal keeps what it is given


def test_text_is_read_as_numbers_and_booleans_only_when_allowed():
    assert Field("x", "number", accept="text").check(" 2.5 ") == 2.5
    assert Field("b", "bool", accept="text").check(" TRUE ") is True
    assert refused(Field("b", "bool"), "true").reason == "type"
    assert refused(Field("x", "number", accept="text"), "two").reason == "type"


def test_text_lists_objects_unions_and_null():
    name = Field("client", "str", pattern=r"[a-z]{1,5}", max_len=5)
    assert refused(name, "abcdefg").reason == "length" and refused(name, "AB").reason == "pattern"
    sides = Field("planned_sides", "list", choices=("L", "R"), max_len=2)
    assert sides.check(["R", "L"]) == ["R", "L"]
    assert refused(sides, ["L", "L"]).reason == "repeat" and refused(sides, ["X"]).reason == "item"
    assert refused(sides, ["L", "R", "L"]).reason == "length"
    either = Field("breathing", "object|bool", nullable=True, accept="exact")
    assert either.check({"a": 1}) == {"a": 1} and either.check(False) is False and either.check(None) is None
    assert refused(either, 3).reason == "type"
    assert refused(Field("t", "number"), None).reason == "null"
    with pytest.raises(ValueError, match="unknown kind"):
        Field("x", "float")


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6))
def test_a_number_is_taken_exactly_when_within_its_range(x):
    spec = Field("level", "number", "uV", -100.0, 100.0)
    if -100.0 <= x <= 100.0:
        assert spec.check(x) == x
    else:
        err = refused(spec, x)
        assert err.reason == "range" and "-100-100 uV" in str(err)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=10,
)


@given(_json, st.sampled_from(["number", "int", "bool", "str", "enum", "list", "object", "object|bool"]),
       st.sampled_from(["exact", "json", "text"]))
def test_any_value_is_either_taken_or_refused_with_a_field_error(value, kind, accept):
    spec = Field("x", kind, minimum=0, maximum=5, choices=("a", "b") if kind in ("enum", "list") else None,
                 max_len=3, accept=accept)
    try:
        spec.check(value)
    except FieldError as err:
        assert err.reason and err.phrase and str(err).startswith("x ")


def test_every_user_speaks_its_own_words_over_the_same_check():
    with pytest.raises(p.ApiError, match=r"stim.set: argument current_mA \(mA\) is 11, out of range; "
                                         r"must be a number 0-10 mA"):
        p.parse_request({"cmd": "stim.set", "output": "probe", "current_mA": 11})
    with pytest.raises(SettingError, match=r"setting stim.probe_current_mA \(mA\) in x.toml: 11 is out of range; "
                                           r"allowed 0.1-10 mA"):
        setting("stim.probe_current_mA").validate(11, "x.toml")
    with pytest.raises(ValueError, match="journal entry note: field 'text' must be str, got 3"):
        entries.validate("note", {"text": 3})
    with pytest.raises(PhysiologyError, match="severity=2 out of range 0-1"):
        _check_range("severity", 2, 0.0, 1.0)


def test_an_integer_too_large_for_any_float_is_a_clear_setting_error():
    # (it used to escape as an OverflowError from the conversion)
    with pytest.raises(SettingError, match="rules.los_consecutive .* is not a number; allowed 1-10 stimuli"):
        setting("rules.los_consecutive").validate(10**400, "x.toml")


def test_the_virtual_patient_takes_no_boolean_for_a_number():
    with pytest.raises(PhysiologyError, match="severity must be a number in 0-1"):
        _check_range("severity", True, 0.0, 1.0)
    assert _check_range("onset_s", "20", 0.0, 3600.0, " s") == 20.0


@pytest.mark.parametrize("entry, fragment", [
    ("kind = 'loss_of_signal'\nafter_s = nan", "after_s must be a number of seconds >= 0 (got nan)"),
    ("kind = 'loss_of_signal'\nside = 'X'", "side must be L or R (got 'X')"),
    ("kind = 'loss_of_signal'\nsite = 'UNTAGGED'", "site must be VAGUS, RLN or EBSLN"),
    ("kind = 'loss_of_signal'\nmin_count = 2\nmax_count = 1", "max_count must be an integer >= min_count"),
])
def test_scenario_expectations_are_checked_by_field(entry, fragment, tmp_path):
    import tomllib

    data = tomllib.loads(f"[scenario]\nseed = 1\nduration_s = 10\n[[expect.event]]\n{entry}\n")
    with pytest.raises(ScenarioError) as info:
        parse_scenario(data, tmp_path / "s.toml")
    assert fragment in str(info.value)
