"""The template bank's lifetime rules (``TemplateBank.get`` / ``get_or_new``): a template
is kept while stimulus time stays within one second before and ``STALE_S`` after the last
measurement at its site (both ends inclusive), and ``get_or_new`` hands back the template
already kept for a key rather than a fresh one."""

from __future__ import annotations

from app.analysis.template import STALE_S, TemplateBank

FS = 5000.0
KEY = ("EMG L", "vagus")


def _bank_with_template(last_t_s: float = 100.0):
    bank = TemplateBank()
    template = bank.get_or_new(KEY, FS, last_t_s)
    template.last_t_s = last_t_s
    return bank, template


def test_a_stimulus_exactly_one_second_before_the_last_keeps_the_template():
    """Clock jitter of up to a second backwards is not a new case: at exactly 1 s before
    the last measurement the template is still there."""
    bank, template = _bank_with_template(100.0)
    assert bank.get(KEY, FS, 99.0) is template


def test_a_stimulus_one_and_a_half_seconds_before_the_last_drops_the_template():
    """More than a second backwards: a new case restarted case time, the shape is dropped."""
    bank, _template = _bank_with_template(100.0)
    assert bank.get(KEY, FS, 98.5) is None
    assert KEY not in bank.templates


def test_a_stimulus_exactly_stale_s_after_the_last_keeps_the_template():
    bank, template = _bank_with_template(100.0)
    assert bank.get(KEY, FS, 100.0 + STALE_S) is template


def test_get_or_new_returns_the_template_already_kept():
    """The second call for the same key, sample rate and a time in range gives back the
    same template with what it learned, not a fresh one."""
    bank, template = _bank_with_template(100.0)
    template.learned = 3
    again = bank.get_or_new(KEY, FS, 150.0)
    assert again is template
    assert again.learned == 3
    assert bank.templates[KEY] is template


def test_get_or_new_replaces_a_template_gone_stale():
    bank, template = _bank_with_template(100.0)
    fresh = bank.get_or_new(KEY, FS, 100.0 + STALE_S + 1.0)
    assert fresh is not template
    assert fresh.learned == 0
    assert bank.templates[KEY] is fresh
