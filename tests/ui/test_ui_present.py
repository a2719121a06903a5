"""Presentation rules without a display: IEC 60601-1-8 visual indicators, words and
symbols with every priority, contrast, physical sizes, number formatting."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.ui import present as P


def _lum(c):
    def ch(v):
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = (ch(x) for x in c[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a, b):
    la, lb = sorted((_lum(a), _lum(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def test_priority_indicators_follow_iec_60601_1_8():
    hi, med, low = (P.PRIORITY_STYLES[k] for k in ("high", "medium", "low"))
    assert 1.4 <= hi.flash_hz <= 2.8 and 0.2 <= hi.duty <= 0.6
    assert 0.4 <= med.flash_hz <= 0.8 and 0.2 <= med.duty <= 0.6
    assert low.flash_hz == 0  # steady
    r, g, b, _ = hi.colour
    assert r > 0.7 and g < 0.3 and b < 0.3  # red
    r, g, b, _ = med.colour
    assert r > 0.8 and g > 0.7 and b < 0.3  # yellow
    r, g, b, _ = low.colour
    assert r < 0.3 and g > 0.6 and b > 0.6  # cyan


def test_priority_is_never_carried_by_colour_alone():
    words = {s.word for s in P.PRIORITY_STYLES.values()}
    symbols = {s.symbol for s in P.PRIORITY_STYLES.values()}
    assert len(words) == len(symbols) == 3
    for pr, s in P.PRIORITY_STYLES.items():
        line = P.alarm_headline({"priority": pr, "title": "Loss of signal", "side": "L", "site": "VAGUS"})
        assert s.word in line and s.symbol in line and "LOSS OF SIGNAL" in line and "left vagus" in line
        tech = P.alarm_headline({"priority": pr, "title": "Lead off", "technical": True})
        assert "TECHNICAL" in tech


def test_text_is_readable_on_every_indicator_and_background():
    for s in P.PRIORITY_STYLES.values():
        assert contrast(s.text, s.colour) >= 4.5, s.priority
        assert contrast(s.dim_text, s.dim) >= 4.5, s.priority  # also in the "off" phase of the flash
    pal = P.PALETTE
    assert contrast(pal["text"], pal["bg"]) >= 7
    assert contrast(pal["text"], pal["panel"]) >= 7
    assert contrast(pal["text"], pal["button"]) >= 7
    assert contrast(pal["text"], pal["primary"]) >= 4.5
    assert contrast(pal["muted"], pal["bg"]) >= 4.5


@given(st.sampled_from(["high", "medium"]), st.floats(0, 1e5))
def test_flashing_has_the_stated_frequency_and_duty(priority, t0):
    s = P.PRIORITY_STYLES[priority]
    dt = 0.001
    n = int(10.0 / dt)
    samples = [P.flash_on(priority, t0 + i * dt) for i in range(n)]
    rises = sum(1 for a, b in zip(samples, samples[1:], strict=False) if b and not a)
    assert abs(rises / 10.0 - s.flash_hz) <= 0.11
    assert abs(sum(samples) / n - s.duty) <= 0.02


def test_steady_and_unknown_priorities():
    assert all(P.flash_on("low", t / 10) for t in range(100))
    assert not P.flash_on(None, 1.0) and not P.flash_on("bogus", 1.0)
    assert P.priority_label("high") == "!!! HIGH" and P.priority_label(None) == ""


@pytest.mark.parametrize("size, dpi, px", [((800, 480), 133.3, 48), ((1280, 800), 149.4, 53)])
def test_known_touchscreens_and_9mm_targets(size, dpi, px):
    d = P.display_dpi(*size)
    assert d == pytest.approx(dpi, abs=0.2)
    assert P.touch_target_px(d) == px
    assert P.touch_target_px(d) * 25.4 / d >= 9.0


@given(st.floats(50, 600))
def test_touch_targets_are_never_under_9mm(dpi):
    assert P.touch_target_px(dpi) * P.MM_PER_INCH / dpi >= P.TOUCH_TARGET_MM - 1e-9


def test_big_numbers_have_an_8mm_cap_height():
    for dpi in (96, 133.3, 149.4, 220):
        font = P.font_px_for_cap(P.BIG_NUMBER_CAP_MM, dpi)
        assert font * P.CAP_HEIGHT_EM * 25.4 / dpi >= 8.0


def test_unknown_screens_use_the_reported_dpi_or_96():
    assert P.display_dpi(1000, 700, reported_dpi=110) == 110
    assert P.display_dpi(1000, 700) == 96
    assert P.display_dpi(1000, 700, diagonal_in=10) == pytest.approx(math.hypot(1000, 700) / 10)


def test_number_formatting_never_shows_nonsense():
    for bad in (None, float("nan"), float("inf"), "12", True):
        assert P.fmt_amp(bad) == "---" and P.fmt_lat(bad) == "---" and P.fmt_ma(bad) == "---"
    assert P.fmt_amp(638.6) == "639" and P.fmt_lat(7.658) == "7.66" and P.fmt_ma(0.998) == "1.00"
    assert P.fmt_pct(96.4) == "96 %"
    assert P.fmt_countdown(119.2) == "2:00" and P.fmt_countdown(0) == "0:00" and P.fmt_countdown(None) == "0:00"
    assert P.fmt_duration(192) == "3 min 12 s" and P.fmt_duration(3725) == "1 h 02 min" and P.fmt_duration(5) == "5 s"
    # case times as the report writes them (app.format.clock rounds to the second)
    assert P.fmt_clock(3725.9) == "1:02:06" and P.fmt_clock(3725.4) == "1:02:05"
    assert P.fmt_clock(None) == "--:--" and P.fmt_clock("12") == "--:--"


def test_response_and_delivered_current_in_words():
    assert P.response_words(None) == "no stimulus yet"
    assert P.response_words({"valid": True, "response": True}) == "RESPONSE"
    assert "current delivered" in P.response_words({"valid": True, "response": False, "delivered_mA": 1.0})
    assert "cautery" in P.response_words({"valid": False, "invalid_reason": "cautery"})
    # a response only the lowered threshold makes one: never a plain RESPONSE
    assert P.response_words({"valid": True, "response": True, "lowered_threshold": True}) == \
        "RESPONSE (lowered threshold)"
    assert P.delivered_words(1.0, 0.99) == ""
    assert "LOW" in P.delivered_words(1.0, 0.90)
    assert P.delivered_words(1.0, None) == ""


def test_document_summary_shows_steps_events_staging_and_notes():
    doc = {
        "case": {"case_id": "C1", "patient_id": "P-1", "planned_sides": ["L", "R"], "procedure": "Total",
                 "duration_s": 3600, "board": {"simulated": True}},
        "sides": {"L": {"steps": {"L1": {"finding": "normal"}, "V1": {"amplitude_uV": 650.0, "latency_ms": 7.9},
                                  "L2": {"finding": "immobile"}}, "v2_of_v1_pct": 20.0},
                  "R": {"steps": {}}},
        "tube_check": [{"passed": False, "message": "impedance", "override": "accepted"}],
        "adverse_events": [{"t_s": 600, "priority": "high", "title": "Loss of signal", "side": "L", "site": "VAGUS",
                            "los_type": {"type": 1},
                            "troubleshooting": [{"check": "leads_ok", "answer": "yes"}]}],
        "staging": [{"recommendation": "consider postponing", "decision": "postpone_second_side", "reason": "risk"}],
        "notes": [{"t_s": 10, "text": "hello"}],
        "journal": {"entries": 10, "verified": True},
    }
    text = P.document_summary(doc)
    for part in ("Case C1", "P-1", "LEFT: L1 normal; V1 650 µV / 7.90 ms; L2 palsy", "V2 = 20 % of V1",
                 "RIGHT: no steps recorded", "Tube check: FAILED", "override: accepted", "!!! HIGH Loss of signal",
                 "LOS type 1", "Probe, return and ground leads connected: yes", "postpone second side (risk)",
                 "hello", "hash chain verified", "SIMULATED"):
        assert part in text, part
