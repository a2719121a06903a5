"""Measurement in a realistic background: ECG, mains hum and breathing wander must not void
real responses, hide them or pass for them; responses at the event threshold; what the
analyzer learns over a case (response shapes, mains profile) and when it forgets.

Noise levels are RMS over the amplifier band 10 Hz - 5 kHz (see ``emg_synth``).
"""

from __future__ import annotations

import numpy as np
import pytest

from app.analysis.epoch import EpochAnalyzer
from app.model import Side, Site, Source, Stimulus
from app.settings import Settings
from emg_synth import (
    EpochSpec,
    PatientBackground,
    ResponseSpec,
    add_evoked,
    background_recording,
    ecg_complex,
    make_epoch,
    site_sequence,
)

RATES = [5000.0, 10000.0, 20000.0, 44100.0]


def random_response(rng: np.random.Generator, amplitude: float, site: Site) -> ResponseSpec:
    lo, hi = (5.5, 10.0) if site is Site.VAGUS else (2.8, 5.0)
    return ResponseSpec(
        amplitude_uV=amplitude, peak_ms=float(rng.uniform(lo, hi)), polarity=int(rng.choice([-1, 1])),
        width_ms=float(rng.uniform(0.4, 0.9)), ratio=float(rng.uniform(0.5, 1.0)), gap_ms=float(rng.uniform(1.4, 2.5)),
    )


def stimulus(i: int, t_s: float, site: Site, side: Side = Side.L) -> Stimulus:
    return Stimulus(i, t_s, site, side, Source.APS if site is Site.VAGUS else Source.PROBE, 1.0, 1.0)


# ----------------------------------------------------------------------------- the noise estimate


@pytest.mark.parametrize("fs", RATES)
def test_noise_estimate_is_the_noise_not_the_ecg_wander_or_hum(fs):
    """7.5 µV of white noise under ECG (R wave 20-150 µV, 50-120 / min), hum (2-20 µV)
    and wander (50-500 µV): the noise estimate stays within 20 % of what the same white
    noise alone gives (it was inflated 2-4 times, voiding clean responses)."""
    rng = np.random.default_rng(int(fs))
    analyzer = EpochAnalyzer(Settings())
    ratios = []
    for seed in range(60):
        common = dict(fs=fs, noise_uV=7.5, seed=seed, t0_s=float(rng.uniform(0, 600)), artifact_uV=3000.0)
        clean = analyzer.analyse(*_cut(EpochSpec(**common)), stimulus(0, 0.0, Site.VAGUS), "EMG L").noise_uV
        busy = EpochSpec(**common, ecg_uV=float(rng.uniform(20, 150) * rng.choice([-1, 1])),
                         ecg_phase_s=float(rng.uniform(0, 1)), ecg_rate_bpm=float(rng.uniform(50, 120)),
                         hum_uV=float(rng.uniform(2, 20)), hum_hz=float(rng.choice([50.0, 60.0])),
                         wander_uV=float(rng.uniform(50, 500)))
        ratios.append(analyzer.analyse(*_cut(busy), stimulus(0, 0.0, Site.VAGUS), "EMG L").noise_uV / clean)
    ratios = np.array(ratios)
    assert 0.9 <= np.median(ratios) <= 1.1, np.median(ratios)
    assert ratios.max() <= 1.2, ratios.max()


def _cut(spec: EpochSpec) -> tuple[np.ndarray, float, int]:
    x, pre, _ = make_epoch(spec)
    return x, spec.fs, pre


# ----------------------------------------------------------------------------- noisy recordings


def noisy_patient(rng: np.random.Generator, fs: float, duration_s: float = 90.0):
    """A recording of one side in a noisy theatre: 7.5 µV white noise, ECG R wave 20-80 µV
    at 50-120 / min, hum 2-10 µV (50 or 60 Hz, with harmonics), breathing wander 50-400 µV.
    The vagus stimulated at 1 Hz (APS), the RLN by probe bursts (4 stimuli at 4 Hz every
    10 s); each response 60-90 µV (absent at the default 100 µV) or 110-160 µV (present),
    of the site's own shape. Returns (samples, [(t_s, site, true amplitude)])."""
    bg = PatientBackground(
        noise_uV=7.5, ecg_uV=float(rng.uniform(20, 80) * rng.choice([-1, 1])), heart_bpm=float(rng.uniform(50, 120)),
        hum_uV=float(rng.uniform(2, 10)), hum_hz=float(rng.choice([50.0, 60.0])), wander_uV=float(rng.uniform(50, 400)),
        breath_hz=float(rng.uniform(0.2, 0.33)),
    )
    x = background_recording(rng, fs, duration_s, bg)
    shapes = {site: random_response(rng, 100.0, site) for site in (Site.VAGUS, Site.RLN)}
    stims = [(float(t), Site.VAGUS) for t in np.arange(1.0, duration_s - 1.0, 1.0)]
    for burst in np.arange(5.3, duration_s - 2.0, 10.0):
        stims += [(float(burst + 0.25 * j), Site.RLN) for j in range(4)]
    out = []
    for t, site in sorted(stims):
        amplitude = float(rng.uniform(60, 90) if rng.random() < 0.5 else rng.uniform(110, 160))
        s = shapes[site]
        response = ResponseSpec(amplitude, s.peak_ms + float(rng.normal(0, 0.03)), s.polarity, s.width_ms, s.ratio,
                                s.gap_ms)
        add_evoked(x, fs, t, response, float(rng.uniform(500, 5000)))
        out.append((t, site, amplitude))
    return x, out


@pytest.mark.parametrize("fs", RATES)
def test_noisy_recordings_neither_void_nor_misread_real_responses(fs):
    """Three noisy recordings per rate (about 1000 stimuli), measured as the monitor does,
    epoch by epoch with one analyzer per recording: at most 1 % voided, and at least 99 %
    right on each side of the threshold (60-90 µV absent, 110-160 µV present). (Before the
    noise estimate ignored ECG and wander, one clean epoch in five was voided.)"""
    rng = np.random.default_rng(int(fs) + 1)
    voided, right, counts = 0, {True: 0, False: 0}, {True: 0, False: 0}
    pre, post = int(round(0.01 * fs)), int(round(0.05 * fs))
    for _patient in range(3):
        x, stims = noisy_patient(rng, fs)
        analyzer = EpochAnalyzer(Settings())
        for i, (t, site, amplitude) in enumerate(stims):
            onset = int(round(t * fs))
            m = analyzer.measure(x[onset - pre : onset + post], fs, pre, stimulus(i, t, site), "EMG L")
            present = amplitude > 100.0
            counts[present] += 1
            if not m.valid:
                voided += 1
                continue
            right[present] += m.response == present
    total = counts[True] + counts[False]
    assert voided <= 0.01 * total, (voided, total)
    assert right[True] >= 0.99 * counts[True], (right, counts)
    assert right[False] >= 0.99 * counts[False], (right, counts)


@pytest.mark.parametrize("fs", [5000.0, 20000.0])
@pytest.mark.parametrize("sharpness", [1.0, 1.6])
def test_ecg_complex_in_the_window_neither_passes_for_nor_hides_a_response(fs, sharpness):
    """A QRS complex of 80 µV (R wave 8 or 5 ms SD) placed at every phase across the
    window, on a response of 150 µV (present) or 70 µV (absent) or none, 3 µV noise: the
    150 µV response is found (within 10 %, latency within 0.2 ms), the 70 µV one and the
    complex alone are not responses; none is voided."""
    pre, post = int(round(0.01 * fs)), int(round(0.05 * fs))
    t_ms = (np.arange(pre + post) - pre) * 1000.0 / fs
    resp = ResponseSpec(150.0, 7.0, polarity=-1, width_ms=0.6)
    for r_ms in np.arange(-40.0, 60.0, 2.5):
        qrs = ecg_complex((t_ms - r_ms) / 1000.0, 80.0, sharpness)
        for amplitude in (150.0, 70.0, 0.0):
            spec = EpochSpec(fs=fs, response=ResponseSpec(amplitude, resp.peak_ms, resp.polarity, resp.width_ms)
                             if amplitude else None, noise_uV=3.0, seed=int(r_ms * 10) % 1000)
            x, _, truth = make_epoch(spec)
            m = EpochAnalyzer(Settings()).measure(x + qrs, fs, pre, stimulus(0, 10.0, Site.VAGUS), "EMG L")
            assert m.valid, (r_ms, amplitude, m)
            assert m.response == (amplitude > 100), (r_ms, amplitude, m)
            if m.response:
                assert m.amplitude_uV == pytest.approx(truth.amplitude_uV, rel=0.10), (r_ms, m)
                assert m.latency_ms == pytest.approx(truth.latency_ms, abs=0.2), (r_ms, m)


# ----------------------------------------------------------------------------- at the threshold


@pytest.mark.parametrize("threshold", [50.0, 100.0, 200.0])
def test_responses_at_0_9_and_1_1_times_the_threshold(threshold):
    """Responses of 0.9x the event threshold are never responses, of 1.1x always, at four
    sample rates, vagal and RLN shapes. It holds with white noise up to 3 % of the
    threshold (RMS, 10 Hz - 5 kHz: 3 µV at the default 100 µV, the virtual patient's
    typical level) under 20 µV ECG, 3 µV hum and up to 500 µV wander, on every epoch
    measured alone (the first at its site); and up to 5 % of the threshold once the
    site's response shape is learned (a run of stimuli). The default is 100 µV
    (clinical-rules.md): raising it in the code, or changing the comparison, fails here."""
    settings = Settings() if threshold == 100.0 else Settings({"analysis.event_threshold_uV": threshold})
    assert Settings()["analysis.event_threshold_uV"] == 100.0
    for fs in RATES:
        rng = np.random.default_rng(int(fs) + int(threshold))
        for j in range(40):  # alone
            site = (Site.VAGUS, Site.RLN)[j % 2]
            for level in (0.9, 1.1):
                spec = EpochSpec(fs=fs, response=random_response(rng, level * threshold, site),
                                 noise_uV=0.03 * threshold,
                                 ecg_uV=20.0, ecg_phase_s=float(rng.uniform(0, 1)), hum_uV=3.0,
                                 hum_hz=float(rng.choice([50.0, 60.0])), wander_uV=float(rng.uniform(0, 500)),
                                 artifact_uV=float(rng.uniform(500, 8000)), seed=j, t0_s=float(rng.uniform(0, 600)))
                x, pre, _ = make_epoch(spec)
                m = EpochAnalyzer(settings).measure(x, fs, pre, stimulus(j, 10.0, site), "EMG L")
                assert m.valid and m.response == (level > 1), (fs, level, m)
        for site in (Site.VAGUS, Site.RLN):  # a run at one site
            analyzer = EpochAnalyzer(settings)
            seq = site_sequence(rng, fs, random_response(rng, threshold, site), 40, noise_uV=0.05 * threshold,
                                amplitude_spread=0.0, ecg_uV=20.0, hum_uV=3.0)
            for j, spec in enumerate(seq):
                level = 1.1 if j % 2 else 0.9
                r = spec.response
                spec.response = ResponseSpec(level * threshold, r.peak_ms, r.polarity, r.width_ms, r.ratio, r.gap_ms)
                x, pre, _ = make_epoch(spec)
                m = analyzer.measure(x, fs, pre, stimulus(j, spec.t0_s, site), "EMG L")
                assert m.valid and m.response == (level > 1), (fs, site, j, level, m)


# ----------------------------------------------------------------------------- what is learned


def _run(analyzer, specs, site=Site.VAGUS, channel="EMG L"):
    out = []
    for i, spec in enumerate(specs):
        x, pre, truth = make_epoch(spec)
        out.append((analyzer.analyse(x, spec.fs, pre, stimulus(i, spec.t0_s, site), channel), truth))
    return out


def test_the_site_shape_is_learned_and_measures_noisy_responses():
    """In 30 µV noise the first stimuli at a site are measured directly; once the shape is
    learned (a few responses) it is fitted: within 10 % far more often, never absent."""
    rng = np.random.default_rng(5)
    fs = 20000.0
    specs = site_sequence(rng, fs, random_response(rng, 200.0, Site.VAGUS), 40, noise_uV=30.0)
    results = _run(EpochAnalyzer(Settings()), specs)
    methods = [a.method for a, _ in results]
    assert methods[0] == "direct" and methods[-30:].count("template") >= 28
    assert all(a.measurement.valid and a.measurement.response for a, _ in results)
    errs = np.array([a.measurement.amplitude_uV / t.amplitude_uV - 1 for a, t in results[10:]])
    assert np.mean(np.abs(errs) <= 0.10) >= 0.75 and abs(np.median(errs)) <= 0.03


@pytest.mark.parametrize("fs", [5000.0, 20000.0, 50000.0])
def test_a_fitted_shape_does_not_put_the_onset_inside_the_artifact_blank(fs):
    """A response so early that it leaves the baseline inside the artifact blank (first
    peak 2.0-2.5 ms): measured through the learned shape in 30 µV noise, its onset is the
    window's start, as a direct measurement reports it; the shape placed it up to 0.2 ms
    earlier, where nothing was measured."""
    rng = np.random.default_rng(int(fs) + 7)
    analyzer = EpochAnalyzer(Settings())
    used = 0
    for k, peak in enumerate((2.0, 2.2, 2.5)):
        base = ResponseSpec(300.0, peak, polarity=1, width_ms=0.5, ratio=0.8, gap_ms=1.5)
        t0 = 100.0 + 100.0 * k
        site = [Site.VAGUS, Site.RLN, Site.EBSLN][k]
        specs = (site_sequence(rng, fs, base, 10, noise_uV=3.0, t0_s=t0)
                 + site_sequence(rng, fs, base, 20, noise_uV=30.0, t0_s=t0 + 20.0, seed0=50))
        for a, _truth in _run(analyzer, specs, site=site):
            m = a.measurement
            if not m.response:  # a large stimulus artifact may void an epoch this early
                continue
            assert a.window_ms[0] <= m.onset_latency_ms <= m.latency_ms, (a.method, m.onset_latency_ms, a.window_ms)
            used += a.method == "template"
    assert used >= 40


def test_a_new_shape_takes_over():
    """The response shape at a site changes (temporal dispersion, wider phases, or another
    structure): the old shape is dropped within a few clean responses, and the noisy ones
    that follow are measured with the new shape, not biased by the old."""
    rng = np.random.default_rng(6)
    fs = 20000.0
    old = ResponseSpec(400.0, 7.0, polarity=1, width_ms=0.45, ratio=0.9, gap_ms=1.5)
    new = ResponseSpec(400.0, 7.6, polarity=1, width_ms=0.8, ratio=0.6, gap_ms=2.4)
    analyzer = EpochAnalyzer(Settings())
    _run(analyzer, site_sequence(rng, fs, old, 20, noise_uV=5.0, t0_s=100.0))
    _run(analyzer, site_sequence(rng, fs, new, 5, noise_uV=5.0, t0_s=120.0, seed0=100))
    noisy = _run(analyzer, site_sequence(rng, fs, new, 30, noise_uV=25.0, t0_s=125.0, seed0=200))
    errs = np.array([a.measurement.amplitude_uV / t.amplitude_uV - 1 for a, t in noisy])
    assert sum(a.method == "template" for a, _ in noisy) >= 25
    assert abs(np.median(errs)) <= 0.03 and np.abs(errs).max() <= 0.15


def test_loss_of_signal_in_noise_is_no_response_not_void():
    """The response disappears (loss of signal) while the noise is 30 µV: every epoch is a
    valid "no response" with a small amplitude (the learned shape is not found), so each
    counts towards the loss and none is voided."""
    rng = np.random.default_rng(8)
    fs = 20000.0
    base = random_response(rng, 600.0, Site.VAGUS)
    analyzer = EpochAnalyzer(Settings())
    _run(analyzer, site_sequence(rng, fs, base, 10, noise_uV=30.0, t0_s=100.0))
    lost = site_sequence(rng, fs, base, 60, noise_uV=30.0, t0_s=110.0, seed0=500)
    for spec in lost:
        spec.response = None
    for a, _ in _run(analyzer, lost):
        m = a.measurement
        assert m.valid and not m.response and m.amplitude_uV < 60.0, (a.method, a.detail, m)


def test_hum_locked_to_the_stimulator_does_not_bend_the_responses():
    """A 1 Hz stimulator against 50 Hz mains: the hum has the same phase in every epoch
    (8 µV, with harmonics). It is learned as hum on the channel, not as part of the
    response shape: the amplitudes stay unbiased."""
    fs = 5000.0
    analyzer = EpochAnalyzer(Settings())
    errs = []
    for j in range(60):
        spec = EpochSpec(fs=fs, response=ResponseSpec(120.0, 8.5, -1, 0.64, 0.8, 2.0), noise_uV=7.5, seed=j,
                         t0_s=100.0 + j, hum_uV=8.0, hum_hz=50.0)
        x, pre, truth = make_epoch(spec)
        m = analyzer.measure(x, fs, pre, stimulus(j, spec.t0_s, Site.VAGUS), "EMG L")
        errs.append(m.amplitude_uV / truth.amplitude_uV - 1)
    assert abs(np.median(errs[20:])) <= 0.02, np.median(errs[20:])
    n_pairs = analyzer._background_model(fs, pre, len(x)).n_pairs
    known = analyzer.mains.present("EMG L", fs, n_pairs, 160.0)
    assert list(known) == [True, False, True, False, False, False]  # 50 and 150 Hz: what the hum has
    assert not analyzer.mains.present("EMG L", fs, n_pairs, 5.0).any()  # a new case: forgotten


def test_untagged_stimuli_never_teach_or_use_a_shape():
    rng = np.random.default_rng(9)
    fs = 20000.0
    analyzer = EpochAnalyzer(Settings())
    results = _run(analyzer, site_sequence(rng, fs, random_response(rng, 200.0, Site.VAGUS), 15, noise_uV=30.0),
                   site=Site.UNTAGGED)
    assert {a.method for a, _ in results} == {"direct"}
    assert not analyzer.templates.templates


def test_what_is_learned_is_forgotten_for_a_new_case():
    """``reset()`` (a new case) forgets the shapes and the mains profile; so does stimulus
    time going backwards at a site (a new case restarts case time) or a site left
    unmeasured for ten minutes."""
    rng = np.random.default_rng(10)
    fs = 20000.0
    base = random_response(rng, 200.0, Site.VAGUS)
    analyzer = EpochAnalyzer(Settings())

    def learned_then(t0_s: float) -> str:
        _run(analyzer, site_sequence(rng, fs, base, 8, noise_uV=30.0, t0_s=1000.0))
        assert _run(analyzer, site_sequence(rng, fs, base, 1, noise_uV=30.0, t0_s=1010.0))[0][0].method == "template"
        return _run(analyzer, site_sequence(rng, fs, base, 1, noise_uV=30.0, t0_s=t0_s))[0][0].method

    assert learned_then(1011.0) == "template"
    assert learned_then(3.0) == "direct"  # time went backwards: a new case
    assert learned_then(1700.0) == "direct"  # stale
    _run(analyzer, site_sequence(rng, fs, base, 8, noise_uV=30.0, t0_s=1000.0))
    analyzer.reset()
    assert not analyzer.templates.templates
    assert not analyzer.mains.present("EMG L", fs, 6).any()
    assert _run(analyzer, site_sequence(rng, fs, base, 1, noise_uV=30.0, t0_s=1011.0))[0][0].method == "direct"


def test_each_channel_and_site_has_its_own_shape():
    rng = np.random.default_rng(11)
    fs = 20000.0
    analyzer = EpochAnalyzer(Settings())
    _run(analyzer, site_sequence(rng, fs, random_response(rng, 300.0, Site.VAGUS), 10, noise_uV=20.0))
    _run(analyzer, site_sequence(rng, fs, random_response(rng, 300.0, Site.RLN), 10, noise_uV=20.0), site=Site.RLN)
    assert set(analyzer.templates.templates) == {("EMG L", "VAGUS"), ("EMG L", "RLN")}
    right = _run(analyzer, site_sequence(rng, fs, random_response(rng, 300.0, Site.VAGUS), 1, noise_uV=20.0),
                 channel="EMG R")
    assert right[0][0].method == "direct"
