"""The field specification's exact words and edges (``firmware_bridge.fields``).

Every message a nurse, a configuration author or an API client reads comes out of
``Field.describe`` and ``FieldError``: these tests pin them whole, with the value the error
carries, the edges of each range and length, and which error a union of kinds reports.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge.fields import Field, FieldError, number_text, shown


def refused(spec: Field, value):
    with pytest.raises(FieldError) as info:
        spec.check(value)
    err = info.value
    assert err.field is spec
    return err


NOT_JSON = object()

# (field, value given, reason, phrase, the value the error carries)
REFUSALS = [
    (Field("t", "number"), None, "null", "is null", None),
    (Field("x", "number", accept="text"), "two", "type", 'is "two", not a number', "two"),
    (Field("x", "number"), "2", "type", 'is "2", not a number', "2"),
    (Field("x", "number"), True, "type", "is true, not a number", True),
    (Field("n", "int", accept="exact"), 3.0, "integer", "is 3.0, not an integer", 3.0),
    (Field("x", "number", accept="exact"), math.inf, "finite", "is Infinity, not a number", math.inf),
    (Field("x", "number"), math.nan, "finite", "is NaN, not a number", math.nan),
    (Field("x", "number", accept="text"), "-inf", "finite", "is -Infinity, not a number", -math.inf),
    (Field("x", "number"), 10**400, "big", "is an integer of 401 digits, out of range", 10**400),
    (Field("x", "number"), -(10**400), "big", "is an integer of 401 digits, out of range", -(10**400)),
    (Field("n", "int"), 2.5, "integer", "is 2.5, not an integer", 2.5),
    (Field("b", "bool"), "true", "type", 'is "true"', "true"),
    (Field("s", "str"), 3, "type", "is 3, not text", 3),
    (Field("s", "str", max_len=3), "abcd", "length", "is 4 characters long", "abcd"),
    (Field("s", "str", pattern="[a-z]+"), "AB", "pattern", "is 'AB'", "AB"),
    (Field("e", "enum", choices=("a", "b")), "c", "choice", 'is "c"', "c"),
    (Field("e", "enum", choices=("a", "b")), 1, "type", "is 1", 1),
    (Field("e", "enum"), 1, "type", "is 1", 1),
    (Field("e", "enum", choices=(1, 2)), 1, "type", "is 1", 1),  # an enum is text, even among odd choices
    (Field("l", "list", choices=("L", "R")), "L", "type", 'is "L"', "L"),
    (Field("l", "list", max_len=1), ["L", "R"], "length", 'is ["L", "R"]', ["L", "R"]),
    (Field("l", "list", choices=("L", "R")), ["L", "X"], "item", 'contains "X"', ["L", "X"]),
    (Field("l", "list"), ["L", "L"], "repeat", "repeats an item", ["L", "L"]),
    (Field("o", "object"), [1], "type", "is [1]", [1]),
    (Field("c", "number", choices=(1, 2)), 3, "choice", "is 3.0", 3.0),
    (Field("r", "number", minimum=0, maximum=1), 1.5, "range", "is 1.5, out of range", 1.5),
]


@pytest.mark.parametrize("spec, value, reason, phrase, carried", REFUSALS)
def test_each_refusal_names_its_reason_its_phrase_and_the_value(spec, value, reason, phrase, carried):
    err = refused(spec, value)
    assert (err.reason, err.phrase) == (reason, phrase)
    if isinstance(carried, float) and math.isnan(carried):
        assert math.isnan(err.value)
    else:
        assert err.value == carried and type(err.value) is type(carried)
    assert str(err) == f"{spec.name}{spec.unit_text()} {phrase}; must be {spec.describe()}"


@pytest.mark.parametrize("spec, words", [
    (Field("x", "number"), "a number"),
    (Field("x", "number", "mA"), "a number mA"),
    (Field("x", "int"), "an integer"),
    (Field("x", "int|bool", "s"), "an integer s"),
    (Field("x", "number", "mA", 0, 10), "a number 0-10 mA"),
    (Field("x", "int", "ms", minimum=5), "an integer 5- ms"),
    (Field("x", "number", maximum=2.5), "a number -2.5"),
    (Field("x", "number", minimum=0.1, maximum=10), "a number 0.1-10"),
    (Field("x", "bool"), "true or false"),
    (Field("x", "str"), "text"),
    (Field("x", "str", max_len=64), "text up to 64 characters"),
    (Field("x", "str", pattern="[a-z]+"), "text matching [a-z]+"),
    (Field("x", "str", max_len=5, pattern="[a-z]+"), "text up to 5 characters matching [a-z]+"),
    (Field("x", "object"), "a JSON object"),
    (Field("x", "object|bool"), "a JSON object"),
    (Field("x", "any"), "any"),
    (Field("x", "enum", choices=("probe", "aps")), "one of probe, aps"),
    (Field("x", "enum"), "enum"),
    (Field("x", "enum", "mode", choices=("a", "b")), "one of a, b"),  # choices of text carry no unit
    (Field("x", "list", choices=("L", "R")), "a list of L, R"),
    (Field("x", "list"), "list"),
    (Field("x", "number", "Hz", choices=(1, 2)), "one of 1 Hz, 2 Hz"),
    (Field("x", "number", choices=(1, 2)), "one of 1, 2"),
    (Field("x", "number", "mA", 0, 10, words="a gentle current"), "a gentle current"),
])
def test_a_good_value_is_described_in_whole_words(spec, words):
    assert spec.describe() == words


def test_the_unit_and_range_texts():
    assert Field("x", unit="mA").unit_text() == " (mA)"
    assert Field("x").unit_text() == ""
    assert Field("x", unit="mA", minimum=1).range_text() == "1- mA"
    assert Field("x", maximum=1.5).range_text() == "-1.5"
    assert Field("x").range_text() == "-"
    assert number_text(None) == "?"
    assert number_text(10.0) == "10" and number_text(0.1) == "0.1" and number_text(-3) == "-3"
    assert number_text(1e-7) == "1e-07"


def test_a_value_in_a_message_is_json_cut_to_its_limit():
    assert shown("a" * 58) == '"' + "a" * 58 + '"'  # 60 characters: whole
    assert shown("a" * 59) == '"' + "a" * 56 + "..."  # 61: cut to 60
    assert len(shown("a" * 500)) == 60
    assert shown([1, 2, 3], limit=7) == "[1, 2, 3]"[:4] + "..."
    assert shown([1, 2], limit=6) == "[1, 2]"
    assert shown(NOT_JSON).startswith("<object object at")
    assert shown({1, 2}) == "{1, 2}"
    assert shown(None) == "null" and shown(math.nan) == "NaN"


def test_bounds_are_inclusive_and_lengths_allowed_up_to_their_limit():
    spec = Field("x", "number", minimum=-1, maximum=1)
    assert spec.check(1) == 1 and spec.check(-1) == -1
    assert refused(spec, 1.0000001).reason == "range" and refused(spec, -1.0000001).reason == "range"
    assert Field("s", "str", max_len=3).check("abc") == "abc"
    assert Field("l", "list", max_len=2).check(["a", "b"]) == ["a", "b"]
    assert Field("s", "str").check("anything at all") == "anything at all"  # no pattern: any text


def test_text_reading_of_booleans_both_ways():
    spec = Field("b", "bool", accept="text")
    assert spec.check("false") is False and spec.check(" False ") is False and spec.check("TRUE") is True
    assert spec.check(False) is False
    assert refused(spec, "yes").reason == "type" and refused(spec, 1).reason == "type"


def test_a_json_read_copies_lists_and_objects_an_exact_read_keeps_them():
    items, obj = ["a"], {"k": 1}
    for accept in ("json", "text"):
        got_items = Field("l", "list", accept=accept).check(items)
        got_obj = Field("o", "object", accept=accept).check(obj)
        assert got_items == items and got_items is not items
        assert got_obj == obj and got_obj is not obj
    assert Field("l", "list", accept="exact").check(items) is items
    assert Field("o", "object", accept="exact").check(obj) is obj


def test_none_is_taken_by_any_and_by_a_nullable_field_only():
    assert Field("x", "any").check(None) is None
    assert Field("x", "bool|any").check(None) is None
    assert Field("x", "number", nullable=True).check(None) is None
    assert refused(Field("x", "bool|object"), None).reason == "null"


def test_a_union_reports_the_first_refusal_that_says_more_than_the_type():
    # int refuses 2.5 as "integer", bool as "type": the integer refusal is the useful one
    err = refused(Field("n", "int|bool"), 2.5)
    assert (err.reason, err.phrase) == ("integer", "is 2.5, not an integer")
    # both kinds say "type": the first kind's words are kept
    err = refused(Field("x", "str|object"), 3)
    assert (err.reason, err.phrase) == ("type", "is 3, not text")
    # the first is already more than a type refusal: a later one does not replace it
    err = refused(Field("x", "str|list", max_len=1), ["a", "b"])
    assert (err.reason, err.phrase) == ("length", 'is ["a", "b"]')
    err = refused(Field("x", "list|str", max_len=1, choices=("a",)), ["b"])
    assert (err.reason, err.phrase) == ("item", 'contains "b"')
    err = refused(Field("x", "enum|str", choices=("a",), max_len=1), "bb")
    assert (err.reason, err.phrase) == ("choice", 'is "bb"')
    assert Field("x", "int|bool").check(True) is True
    assert Field("x", "int|bool").check(2.0) == 2


def test_a_badly_made_field_is_refused_with_the_choices_named():
    with pytest.raises(ValueError) as info:
        Field("x", "number|float")
    assert str(info.value) == ("field x: unknown kind 'float'; one of "
                               "number, int, bool, str, enum, list, object, any")
    with pytest.raises(ValueError) as info:
        Field("x", accept="lenient")
    assert str(info.value) == "field x: accept must be one of exact, json, text"


@given(st.integers(min_value=-(10**6), max_value=10**6), st.integers(min_value=-(10**6), max_value=10**6))
def test_an_integer_range_takes_exactly_the_integers_between_its_ends(x, lo):
    hi = lo + 100
    spec = Field("n", "int", minimum=lo, maximum=hi)
    if lo <= x <= hi:
        got = spec.check(x)
        assert got == x and type(got) is int
    else:
        err = refused(spec, x)
        assert err.reason == "range" and err.phrase == f"is {x:g}, out of range" and err.value == x
