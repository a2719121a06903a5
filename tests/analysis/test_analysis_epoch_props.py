"""Property tests of the epoch measurement (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from app.analysis.epoch import EpochAnalyzer
from app.model import Side, Site, Source, Stimulus
from app.settings import Settings
from emg_synth import EpochSpec, ResponseSpec, make_epoch

THRESHOLD = 100.0

stimuli = st.builds(
    Stimulus,
    index=st.integers(0, 10_000),
    t_s=st.floats(0, 10_000),
    site=st.sampled_from(list(Site)),
    side=st.sampled_from(list(Side)),
    source=st.sampled_from(list(Source)),
    set_mA=st.floats(0.0, 10.0),
    delivered_mA=st.one_of(st.none(), st.floats(0.0, 10.0)),
)


def check_invariants(m, stim, channel, fs):
    assert m.stimulus is stim and m.channel == channel
    if not m.valid:
        assert m.invalid_reason is not None
        assert not m.response and m.amplitude_uV is None
        assert m.latency_ms is None and m.onset_latency_ms is None
        return
    assert m.invalid_reason is None
    assert m.amplitude_uV is not None and math.isfinite(m.amplitude_uV) and m.amplitude_uV >= 0
    if m.response:
        assert m.amplitude_uV >= THRESHOLD
        assert m.latency_ms <= 50.0
        assert 1.5 - 1e3 / fs <= m.onset_latency_ms <= m.latency_ms + 1e-9
    else:
        assert m.latency_ms is None and m.onset_latency_ms is None


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    data=st.data(),
    fs=st.sampled_from([5000.0, 7777.0, 10000.0, 12000.0, 20000.0, 44100.0, 50000.0]),
    stim=stimuli,
    channel=st.sampled_from(["EMG L", "EMG R", None]),
    extra=st.integers(0, 300),
    scale=st.sampled_from([1.0, 1e2, 1e4, 1e6]),
)
def test_never_raises_on_finite_input(data, fs, stim, channel, extra, scale):
    pre = int(round(0.010 * fs))
    n = pre + int(round(0.050 * fs)) + extra
    x = data.draw(hnp.arrays(np.float64, n, elements=st.floats(-1.0, 1.0, width=32))) * scale
    m = EpochAnalyzer(Settings()).measure(x, fs, pre, stim, channel)  # fresh: a failure replays
    check_invariants(m, stim, channel, fs)


@settings(max_examples=60, deadline=None)
@given(
    amplitude=st.floats(20.0, 5000.0),
    peak_ms=st.floats(2.5, 12.0),
    polarity=st.sampled_from([-1, 1]),
    noise=st.floats(0.0, 30.0),
    seed=st.integers(0, 2**16),
    fs=st.sampled_from([5000.0, 12000.0, 20000.0, 44100.0]),
    site=st.sampled_from(list(Site)),
)
def test_synthetic_epochs_keep_the_invariants(amplitude, peak_ms, polarity, noise, seed, fs, site):
    spec = EpochSpec(fs=fs, response=ResponseSpec(amplitude, peak_ms, polarity), noise_uV=noise, seed=seed)
    x, pre, _ = make_epoch(spec)
    stim = Stimulus(0, 1.0, site, Side.R, Source.PROBE, 1.0, None)
    check_invariants(EpochAnalyzer(Settings()).measure(x, fs, pre, stim, "EMG R"), stim, "EMG R", fs)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    fs=st.sampled_from([5000.0, 20000.0, 44100.0]),
    amplitude=st.floats(200.0, 2000.0),
    peak_ms=st.floats(2.0, 12.0),
    polarity=st.sampled_from([-1, 1]),
    width_ms=st.floats(0.3, 1.0),
    site=st.sampled_from([Site.VAGUS, Site.RLN, Site.EBSLN]),
    noise=st.floats(0.0, 60.0),
    seed=st.integers(0, 2**16),
)
def test_a_learned_shape_keeps_the_invariants(data, fs, amplitude, peak_ms, polarity, width_ms, site, noise, seed):
    """The site's response shape learned from eight clean responses (so the next epochs may be
    measured with it), then an epoch of anything: a response of that shape, scaled, moved and
    in noise, or random samples. The same invariants hold; the analyzer is made afresh for
    each example, so a failure replays (it carried what earlier examples taught it)."""
    analyzer = EpochAnalyzer(Settings())
    base = ResponseSpec(amplitude, peak_ms, polarity, width_ms)
    for j in range(8):
        x, pre, _ = make_epoch(EpochSpec(fs=fs, response=base, noise_uV=2.0, seed=seed + j, t0_s=10.0 + j))
        analyzer.measure(x, fs, pre, Stimulus(j, 10.0 + j, site, Side.L, Source.PROBE, 1.0, None), "EMG L")
    event("shape learned" if ("EMG L", site.value) in analyzer.templates.templates else "shape not learned")
    stim = Stimulus(8, 18.0, site, Side.L, Source.PROBE, 1.0, None)
    if data.draw(st.booleans(), label="a response of the learned shape"):
        moved = ResponseSpec(amplitude * data.draw(st.floats(0.2, 1.5)), peak_ms + data.draw(st.floats(-0.5, 0.5)),
                             polarity, width_ms)
        x, pre, _ = make_epoch(EpochSpec(fs=fs, response=moved, noise_uV=noise, seed=seed + 99, t0_s=18.0))
    else:
        pre = int(round(0.010 * fs))
        n = pre + int(round(0.050 * fs))
        scale = data.draw(st.sampled_from([1e2, 1e3, 1e4]))
        x = data.draw(hnp.arrays(np.float64, n, elements=st.floats(-1.0, 1.0, width=32))) * scale
    a = analyzer.analyse(x, fs, pre, stim, "EMG L")
    event(f"measured: {a.method}")
    check_invariants(a.measurement, stim, "EMG L", fs)


@settings(max_examples=60, deadline=None)
@given(
    amplitude=st.floats(50.0, 3000.0),
    peak_ms=st.floats(3.0, 10.0),
    k=st.floats(0.25, 4.0),
    offset=st.floats(-1500.0, 1500.0),
    seed=st.integers(0, 2**16),
    fs=st.sampled_from([5000.0, 20000.0, 44100.0]),
)
# an even-length noise reference whose upper middle sample once stood for its median: -x
# measured 0.003 uV more than x
@example(amplitude=1548.0, peak_ms=9.75, k=1.0, offset=0.0, seed=1548, fs=20000.0)
def test_scaling_scales_the_amplitude(amplitude, peak_ms, k, offset, seed, fs):
    """The measurement is linear: k * x + offset -> k * amplitude, same latencies.

    (Validity may change where scaling crosses the event threshold, since only a response
    candidate is checked against the noise and the artifact: compared where both valid.)
    """
    x, pre, _ = make_epoch(EpochSpec(fs=fs, response=ResponseSpec(amplitude, peak_ms), noise_uV=2.0, seed=seed))
    stim = Stimulus(0, 1.0, Site.VAGUS, Side.L, Source.APS, 1.0, 1.0)
    a = EpochAnalyzer(Settings()).measure(x, fs, pre, stim, "EMG L")
    b = EpochAnalyzer(Settings()).measure(k * x + offset, fs, pre, stim, "EMG L")
    c = EpochAnalyzer(Settings()).measure(-x, fs, pre, stim, "EMG L")
    assert a.valid and c.valid
    assume(b.valid)
    assert math.isclose(b.amplitude_uV, k * a.amplitude_uV, rel_tol=1e-6, abs_tol=1e-6)
    assert math.isclose(c.amplitude_uV, a.amplitude_uV, rel_tol=1e-9, abs_tol=1e-9)
    if a.response and b.response:
        assert math.isclose(a.latency_ms, b.latency_ms, abs_tol=1e-6)
        assert math.isclose(a.onset_latency_ms, b.onset_latency_ms, abs_tol=1e-6)
    if a.response:
        assert c.response and math.isclose(a.latency_ms, c.latency_ms, abs_tol=1e-9)
