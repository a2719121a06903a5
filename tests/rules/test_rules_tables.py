"""Every condition's transition table: documented as it runs, complete, and exercised
transition by transition against expectations written out here independently."""

from __future__ import annotations

import inspect

import pytest

from app.rules import conditions as c
from app.rules.machine import Machine, Row, RuleTableError, render
from app.settings import Settings

DEFAULT = Settings()


@pytest.mark.parametrize("cond", c.CONDITIONS, ids=lambda k: k.__name__)
def test_docstring_table_is_the_table_the_code_runs(cond):
    doc = "\n".join(line.strip() for line in inspect.getdoc(cond).splitlines())
    assert cond.MACHINE.render() in doc


@pytest.mark.parametrize("cond", c.CONDITIONS, ids=lambda k: k.__name__)
def test_every_state_has_a_transition_for_every_input(cond):
    mc = cond.MACHINE
    for state in mc.states:
        for symbol in mc.symbols:
            for run in range(0, 12):
                out = mc.step(state, run, symbol, DEFAULT)
                assert out.state in mc.states


@pytest.mark.parametrize("cond", c.CONDITIONS, ids=lambda k: k.__name__)
def test_limits_are_settings(cond):
    for key in cond.MACHINE.limits():
        assert key in DEFAULT
        assert key.startswith("rules.")


def test_incomplete_or_inconsistent_tables_are_refused():
    with pytest.raises(RuleTableError, match="no transition for B on x"):
        Machine("m", "A", ("A", "B"), ("x",), (Row("A", "x", "B"),))
    with pytest.raises(RuleTableError, match="do not cover"):
        Machine("m", "A", ("A",), ("x",), (Row("A", "x", "A", "+1", "run<rules.los_consecutive"),))
    with pytest.raises(RuleTableError, match="unknown"):
        Machine("m", "A", ("A",), ("x",), (Row("A", "x", "Z"),))
    with pytest.raises(RuleTableError, match="not understood"):
        Machine("m", "A", ("A",), ("x",), (Row("A", "x", "A", "=", "run==3"),))
    with pytest.raises(RuleTableError, match="run operation"):
        Machine("m", "A", ("A",), ("x",), (Row("A", "x", "A", "*2"),))


def test_render_format():
    assert render([Row("A", "x", "B", "+1", "run<rules.los_consecutive", "e")]).splitlines() == [
        "state | input | when | next | run | emits",
        "A | x | run<rules.los_consecutive | B | +1 | e",
    ]


def _check(machine, cases, changes=None):
    st = DEFAULT.with_changes(changes or {})
    for state, run, symbol, nxt, run2, emit in cases:
        out = machine.step(state, run, symbol, st)
        assert (out.state, out.run, out.emit) == (nxt, run2, emit), (state, run, symbol)


APS_BASELINE_CASES = [
    ("COLLECTING", 0, "RESPONSE", "COLLECTING", 1, "collect"),
    ("COLLECTING", 18, "RESPONSE", "COLLECTING", 19, "collect"),
    ("COLLECTING", 19, "RESPONSE", "SET", 20, "baseline_set"),
    ("COLLECTING", 7, "SKIP", "COLLECTING", 7, ""),
    ("COLLECTING", 7, "REBASELINE", "COLLECTING", 0, ""),
    ("SET", 20, "RESPONSE", "SET", 20, ""),
    ("SET", 20, "SKIP", "SET", 20, ""),
    ("SET", 20, "REBASELINE", "COLLECTING", 0, ""),
]


def test_aps_baseline_transitions():
    _check(c.ApsBaseline.MACHINE, APS_BASELINE_CASES)
    _check(c.ApsBaseline.MACHINE, [("COLLECTING", 19, "RESPONSE", "COLLECTING", 20, "collect"),
                                   ("COLLECTING", 29, "RESPONSE", "SET", 30, "baseline_set")],
           {"rules.aps_baseline_count": 30})


def test_probe_baseline_transitions():
    _check(c.ProbeBaseline.MACHINE, [
        ("NONE", 0, "GOOD", "FIRST_RESPONSE", 1, "baseline_set"),
        ("NONE", 0, "SKIP", "NONE", 0, ""),
        ("NONE", 0, "CAPTURE", "CAPTURED", 1, "baseline_set"),
        ("NONE", 0, "CLEAR", "NONE", 0, ""),
        ("FIRST_RESPONSE", 1, "GOOD", "FIRST_RESPONSE", 1, ""),
        ("FIRST_RESPONSE", 1, "CAPTURE", "CAPTURED", 1, "baseline_set"),
        ("FIRST_RESPONSE", 1, "CLEAR", "NONE", 0, ""),
        ("CAPTURED", 1, "GOOD", "CAPTURED", 1, ""),
        ("CAPTURED", 1, "CAPTURE", "CAPTURED", 1, "baseline_set"),
        ("CAPTURED", 1, "CLEAR", "NONE", 0, ""),
        ("CAPTURED", 1, "SKIP", "CAPTURED", 1, ""),
    ])


AMP_CASES = [
    # before a baseline nothing counts
    ("NO_BASELINE", 0, "LOW_LATE", "NO_BASELINE", 0, ""),
    ("NO_BASELINE", 0, "LOW_STABLE", "NO_BASELINE", 0, ""),
    ("NO_BASELINE", 0, "ABSENT", "NO_BASELINE", 0, ""),
    ("NO_BASELINE", 0, "RECOVERED", "NO_BASELINE", 0, ""),
    ("NO_BASELINE", 0, "BASELINE_SET", "NORMAL", 0, ""),
    # combined: three in a row
    ("NORMAL", 0, "LOW_LATE", "NORMAL_C", 1, ""),
    ("NORMAL_C", 1, "LOW_LATE", "NORMAL_C", 2, ""),
    ("NORMAL_C", 2, "LOW_LATE", "COMBINED", 3, "combined_event"),
    ("NORMAL_C", 2, "OK", "NORMAL", 0, ""),
    ("NORMAL_C", 2, "ABSENT", "NORMAL_C", 2, ""),
    ("NORMAL_C", 2, "SKIP", "NORMAL_C", 2, ""),
    ("NORMAL_C", 2, "LOW_STABLE", "NORMAL_D", 1, ""),
    # decrease: three in a row
    ("NORMAL", 0, "LOW_STABLE", "NORMAL_D", 1, ""),
    ("NORMAL_D", 1, "LOW_STABLE", "NORMAL_D", 2, ""),
    ("NORMAL_D", 2, "LOW_STABLE", "DECREASED", 3, "amplitude_decrease"),
    ("NORMAL_D", 2, "LOW_LATE", "NORMAL_C", 1, ""),
    ("NORMAL_D", 2, "OK", "NORMAL", 0, ""),
    ("NORMAL_D", 2, "ABSENT", "NORMAL_D", 2, ""),
    ("NORMAL", 0, "OK", "NORMAL", 0, ""),
    ("NORMAL", 0, "ABSENT", "NORMAL", 0, ""),
    # a decrease escalates to a combined event
    ("DECREASED", 3, "LOW_STABLE", "DECREASED", 0, ""),
    ("DECREASED", 0, "OK", "DECREASED", 0, ""),
    ("DECREASED", 0, "LOW_LATE", "DECREASED_C", 1, ""),
    ("DECREASED_C", 1, "LOW_LATE", "DECREASED_C", 2, ""),
    ("DECREASED_C", 2, "LOW_LATE", "COMBINED", 3, "combined_event"),
    ("DECREASED_C", 2, "LOW_STABLE", "DECREASED", 0, ""),
    ("DECREASED_C", 2, "OK", "DECREASED", 0, ""),
    ("DECREASED_C", 2, "ABSENT", "DECREASED_C", 2, ""),
    # a combined event is never downgraded
    ("COMBINED", 3, "LOW_STABLE", "COMBINED", 3, ""),
    ("COMBINED", 3, "LOW_LATE", "COMBINED", 3, ""),
    ("COMBINED", 3, "OK", "COMBINED", 3, ""),
    # control inputs
    ("COMBINED", 3, "RECOVERED", "NORMAL", 0, ""),
    ("DECREASED", 0, "RECOVERED", "NORMAL", 0, ""),
    ("NORMAL_C", 2, "RECOVERED", "NORMAL", 0, ""),
    ("COMBINED", 3, "REBASELINE", "NO_BASELINE", 0, ""),
    ("NORMAL_D", 2, "REBASELINE", "NO_BASELINE", 0, ""),
]


def test_aps_amplitude_transitions():
    _check(c.ApsAmplitude.MACHINE, AMP_CASES)


def test_aps_amplitude_run_lengths_are_settings():
    mc = c.ApsAmplitude.MACHINE
    _check(mc, [("NORMAL", 0, "LOW_LATE", "COMBINED", 1, "combined_event"),
                ("NORMAL", 0, "LOW_STABLE", "NORMAL_D", 1, "")],
           {"rules.combined_consecutive": 1})
    _check(mc, [("NORMAL_D", 2, "LOW_STABLE", "NORMAL_D", 3, ""),
                ("NORMAL_D", 4, "LOW_STABLE", "DECREASED", 5, "amplitude_decrease")],
           {"rules.amplitude_decrease_consecutive": 5})


def test_recovery_transitions():
    _check(c.Recovery.MACHINE, [
        ("IDLE", 0, "OK", "IDLE", 0, ""),
        ("IDLE", 0, "LOW", "IDLE", 0, ""),
        ("IDLE", 0, "SKIP", "IDLE", 0, ""),
        ("IDLE", 0, "DONE", "IDLE", 0, ""),
        ("IDLE", 3, "LOSS", "WATCHING", 0, ""),
        ("WATCHING", 0, "OK", "WATCHING", 1, ""),
        ("WATCHING", 1, "OK", "WATCHING", 2, ""),
        ("WATCHING", 2, "OK", "IDLE", 3, "signal_recovered"),
        ("WATCHING", 2, "LOW", "WATCHING", 0, ""),
        ("WATCHING", 2, "SKIP", "WATCHING", 2, ""),
        ("WATCHING", 2, "LOSS", "WATCHING", 0, ""),
        ("WATCHING", 2, "DONE", "IDLE", 0, ""),
    ])
    _check(c.Recovery.MACHINE, [("WATCHING", 2, "OK", "WATCHING", 3, "")], {"rules.recovery_consecutive": 5})


def test_no_current_transitions():
    _check(c.NoCurrent.MACHINE, [
        ("DELIVERING", 0, "SHORT", "NOT_DELIVERED", 1, "no_current"),
        ("DELIVERING", 0, "DELIVERED", "DELIVERING", 0, ""),
        ("DELIVERING", 0, "SKIP", "DELIVERING", 0, ""),
        ("NOT_DELIVERED", 1, "SHORT", "NOT_DELIVERED", 2, ""),
        ("NOT_DELIVERED", 4, "SKIP", "NOT_DELIVERED", 4, ""),
        ("NOT_DELIVERED", 4, "DELIVERED", "DELIVERING", 0, ""),
    ])


def test_poor_baseline_transitions():
    _check(c.PoorBaseline.MACHINE, [
        ("V1_PENDING", 0, "V1_POOR", "V1_CHECKED", 0, "poor_baseline"),
        ("V1_PENDING", 0, "V1_GOOD", "V1_CHECKED", 0, ""),
        ("V1_PENDING", 0, "SKIP", "V1_PENDING", 0, ""),
        ("V1_CHECKED", 0, "V1_POOR", "V1_CHECKED", 0, ""),
        ("V1_CHECKED", 0, "V1_GOOD", "V1_CHECKED", 0, ""),
        ("V1_PENDING", 0, "APS_POOR", "V1_PENDING", 0, "poor_baseline"),
        ("V1_CHECKED", 0, "APS_POOR", "V1_CHECKED", 0, "poor_baseline"),
        ("V1_CHECKED", 0, "APS_GOOD", "V1_CHECKED", 0, ""),
    ])


def test_nonrecurrent_transitions():
    _check(c.NonRecurrent.MACHINE, [
        ("WATCHING", 0, "SHORT_LATENCY", "RAISED", 0, "nonrecurrent_nerve_suspected"),
        ("WATCHING", 0, "SKIP", "WATCHING", 0, ""),
        ("RAISED", 0, "SHORT_LATENCY", "RAISED", 0, ""),
        ("RAISED", 0, "SKIP", "RAISED", 0, ""),
    ])
