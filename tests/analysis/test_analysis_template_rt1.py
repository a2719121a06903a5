"""What a ``ResponseTemplate`` learns and what it reports before it has learned anything:
its span (``SPAN_MS`` around the first major peak, both ends included), which segments
teach it (at least 4 samples, a positive amplitude, a positive noise, at least 2 samples
inside the span), how many responses it counts, and the state of a new template (no
shape, no noise, no peak times), also as the ``TemplateBank`` hands it out.

The segments are synthetic and noise-free, at 5 kHz (0.2 ms per sample): the span is the
samples -20 to 70 around the first major peak (-4 ms to 14 ms)."""

from __future__ import annotations

import numpy as np
import pytest

from app.analysis.template import SPAN_MS, ResponseTemplate, TemplateBank

FS = 5000.0
H_MS = 1000.0 / FS
LATENCY_MS = 10.0  # first major peak of the taught responses, from the stimulus


def _slow_wave(n: int = 200) -> np.ndarray:
    """200 samples from the stimulus (40 ms): a slow wave peaking at 10 ms, still large at
    both ends of the span (-4 and 14 ms from its peak) and beyond them."""
    t = np.arange(n) * H_MS - LATENCY_MS
    return 100.0 * np.cos(2.0 * np.pi * t / 6.0)


def _taught() -> ResponseTemplate:
    template = ResponseTemplate(FS)
    template.learn(0, _slow_wave(), LATENCY_MS, 200.0, 1.0)
    return template


# ------------------------------------------------------------------------------ the span


def test_the_span_is_4_ms_before_to_14_ms_after_the_first_peak_both_ends_included():
    """The template's own noise (per learned sample) is there from exactly -4 ms to exactly
    14 ms, and nowhere beyond: one sample (0.2 ms) more or less at either end shows."""
    template = _taught()
    assert template.usable(10.0)
    w = (200.0 / 1.0) ** 2
    ends = np.array(SPAN_MS)
    assert template.variance(ends) == pytest.approx([1.0 / w, 1.0 / w], rel=1e-12)  # inside the support
    assert template.variance(ends + [0.01, -0.01]) == pytest.approx([1.0 / w, 1.0 / w], rel=1e-12)
    assert template.variance(ends + [-0.01, 0.01]).tolist() == [0.0, 0.0]  # beyond either end
    assert template.variance(ends + [-H_MS, H_MS]).tolist() == [0.0, 0.0]
    # (the 0.01 ms grid runs on to 14.19 ms, interpolating towards the span's first sample)
    s, _d = template.values(ends + [-0.01, H_MS])
    assert s.tolist() == [0.0, 0.0]
    s, _d = template.values(ends)
    assert np.all(np.abs(s) > 0.1)


# ---------------------------------------------------------------------- a new template


def test_a_template_that_has_learned_nothing_has_no_shape_noise_or_peak_times():
    template = ResponseTemplate(FS)
    assert template.learned == 0
    assert template.snr == 0.0
    assert template.usual_latency_ms == 0.0
    assert not template.usable(1000.0)
    assert template.last_t_s is None
    t = np.linspace(-5.0, 15.0, 41)
    s, d = template.values(t)
    assert s.tolist() == [0.0] * len(t)
    assert d.tolist() == [0.0] * len(t)
    assert template.variance(t).tolist() == [0.0] * len(t)
    assert template.similarity(0, _slow_wave(), LATENCY_MS) == 0.0
    # no peak-to-peak value (on either grid), no peak times, no support, no phase
    assert (template.ptp, template.native_ptp) == (0.0, 0.0)
    assert (template.first_peak_ms, template.onset_ms, template.max_ms, template.min_ms) == (0.0, 0.0, 0.0, 0.0)
    assert template.support == (0.0, 0.0)
    assert template.phase_ms == 0.0


def test_a_new_template_from_the_bank_is_handed_out_again_before_it_is_ever_measured():
    """A template just made has no time of its last measurement: asked for again (at any
    time, the same sample rate) the bank gives the same template back."""
    bank = TemplateBank()
    key = ("EMG L", "RLN")
    made = bank.get_or_new(key, FS, 100.0)
    assert bank.get(key, FS, 100.0) is made
    assert bank.get(key, FS, 5.0) is made  # not yet measured: no time to go back from
    assert bank.get_or_new(key, FS, 2000.0) is made


# ------------------------------------------------------------------ which segments teach


def test_the_template_counts_the_responses_it_learned():
    template = ResponseTemplate(FS)
    for n in (1, 2, 3):
        template.learn(0, _slow_wave(), LATENCY_MS, 200.0, 1.0)
        assert template.learned == n
    template.learn(0, _slow_wave(), LATENCY_MS, 0.0, 1.0)  # ignored: not counted
    template.learn(0, _slow_wave(), 1000.0, 200.0, 1.0)  # nowhere near the span: not counted
    assert template.learned == 3


@pytest.mark.parametrize(
    ("first", "n", "amplitude_uV", "noise_uV"),
    [
        (48, 3, 200.0, 1.0),  # too short (three samples around the peak)
        (0, 200, 0.0, 1.0),  # no amplitude
        (0, 200, -200.0, 1.0),  # a negative amplitude
        (0, 200, 200.0, 0.0),  # no noise (an infinite weight)
        (0, 200, 200.0, -1.0),
        (0, 200, 200.0, float("nan")),
    ],
)
def test_a_segment_that_cannot_teach_leaves_the_template_as_it_was(first, n, amplitude_uV, noise_uV):
    """Offered at 12 ms (a lesson would move the usual latency), after one response: not
    even that response fades, the template is exactly as before."""
    template = _taught()
    before = (template.snr, template.usual_latency_ms, template.similarity(0, _slow_wave(), LATENCY_MS))
    template.learn(first, _slow_wave()[first : first + n], 12.0, amplitude_uV, noise_uV)
    assert template.learned == 1
    assert (template.snr, template.usual_latency_ms, template.similarity(0, _slow_wave(), LATENCY_MS)) == before


def test_four_samples_are_enough_to_teach():
    template = ResponseTemplate(FS)
    template.learn(48, _slow_wave()[48:52], LATENCY_MS, 200.0, 1.0)
    assert template.learned == 1
    assert template.snr == 200.0
    assert template.usual_latency_ms == LATENCY_MS


def test_a_response_of_half_a_microvolt_teaches():
    """The amplitude is in uV: any positive one teaches (its weight is its SNR squared)."""
    template = ResponseTemplate(FS)
    template.learn(0, 0.005 * _slow_wave(), LATENCY_MS, 0.5, 0.01)
    assert template.learned == 1
    assert template.snr == pytest.approx(50.0)


@pytest.mark.parametrize(("overlap", "teaches"), [(1, False), (2, True)])
@pytest.mark.parametrize("end", ["start", "end"])
def test_a_segment_must_reach_two_samples_into_the_span(overlap, teaches, end):
    """A 10-sample segment placed so that only its last (or first) ``overlap`` samples lie
    in the span: a single sample teaches nothing, two do (its last sample included)."""
    n = 10
    y = np.linspace(1.0, 2.0, n)
    if end == "start":  # the segment ends `overlap` samples into the span (sample -20 is its first)
        r0 = -20 + overlap - n
    else:  # the segment starts `overlap` samples before the span's last sample (70)
        r0 = 70 - overlap + 1
    first = 100
    latency_ms = (first - r0) * H_MS
    template = ResponseTemplate(FS)
    template.learn(first, y, latency_ms, 1.0, 0.01)
    assert template.learned == int(teaches)
    assert template.snr == (100.0 if teaches else 0.0)
    assert template.usual_latency_ms == pytest.approx(latency_ms if teaches else 0.0)
