"""Measurement of evoked responses against synthetic epochs with known truth.

Noise levels are RMS over the amplifier band 10 Hz - 5 kHz (see ``emg_synth``). Every
accuracy case carries ECG, 50/60 Hz hum and breathing wander as well as white noise.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal as sps

from app.analysis.epoch import EpochAnalyzer, _ZeroPhase
from app.model import InvalidReason, Side, Site, Source, Stimulus
from app.settings import Settings
from emg_synth import (
    NOISE_BAND_HZ,
    EpochSpec,
    ResponseSpec,
    known_shape_oracle,
    make_epoch,
    response_waveform,
    site_sequence,
    white_noise,
)
from firmware_bridge.messages import Output, StimEpoch

RATES = [5000.0, 10000.0, 12000.0, 16000.0, 20000.0, 22050.0, 44100.0, 7777.0]


@pytest.fixture(scope="module")
def analyzer() -> EpochAnalyzer:
    return EpochAnalyzer(Settings())


def stim(site: Site = Site.VAGUS, side: Side = Side.L, set_mA: float = 1.0, delivered: float | None = 1.0) -> Stimulus:
    return Stimulus(0, 10.0, site, side, Source.APS if site is Site.VAGUS else Source.PROBE, set_mA, delivered)


def random_response(rng: np.random.Generator, amplitude: float, site: Site) -> ResponseSpec:
    lo, hi = {Site.VAGUS: (3.0, 12.0), Site.RLN: (2.8, 6.0), Site.EBSLN: (2.8, 6.0), Site.UNTAGGED: (2.8, 12.0)}[site]
    return ResponseSpec(
        amplitude_uV=amplitude,
        peak_ms=float(rng.uniform(lo, hi)),
        polarity=int(rng.choice([-1, 1])),
        width_ms=float(rng.uniform(0.4, 0.9)),
        ratio=float(rng.uniform(0.5, 1.0)),
        gap_ms=float(rng.uniform(1.4, 2.5)),
    )


def contaminated(rng, fs, response, noise, seed, ecg_uV=20.0, hum_uV=5.0):
    return EpochSpec(
        fs=fs,
        response=response,
        noise_uV=noise,
        ecg_uV=ecg_uV,
        ecg_phase_s=float(rng.uniform(0, 1)),
        hum_uV=hum_uV,
        hum_hz=float(rng.choice([50.0, 60.0])),
        wander_uV=float(rng.uniform(0, 500)),
        artifact_uV=float(rng.uniform(500, 8000)),
        seed=seed,
        t0_s=float(rng.uniform(0, 600)),
    )


def _errors(analyzer, cases):
    """(amplitude errors, latency errors, epochs not measured as a valid response);
    ``analyzer`` None: a fresh analyzer for each epoch (nothing learned)."""
    amp_err, lat_err, bad = [], [], []
    for spec in cases:
        x, pre, truth = make_epoch(spec)
        site = spec.extra.get("site", Site.VAGUS)
        m = (analyzer or EpochAnalyzer(Settings())).measure(x, spec.fs, pre, stim(site), "EMG L")
        if not (m.valid and m.response):
            bad.append((spec, m))
            continue
        amp_err.append(m.amplitude_uV / truth.amplitude_uV - 1.0)
        lat_err.append(m.latency_ms - truth.latency_ms)
    return np.array(amp_err), np.array(lat_err), bad


@pytest.mark.parametrize("fs", RATES)
def test_accuracy_every_epoch(analyzer, fs):
    """>= 200 µV at <= 10 µV RMS, >= 500 µV at <= 20 µV, >= 1000 µV at <= 30 µV: every
    epoch within 10 % and 0.2 ms (the 30 µV case for smaller responses is below)."""
    rng = np.random.default_rng(int(fs))
    cases = []
    seed = 0
    levels = ((200.0, (0.0, 5.0, 10.0)), (500.0, (10.0, 20.0)), (1000.0, (20.0, 30.0)), (3000.0, (30.0,)))
    for amplitude, noises in levels:
        for noise in noises:
            for _ in range(6):
                site = [Site.VAGUS, Site.RLN, Site.EBSLN, Site.UNTAGGED][seed % 4]
                spec = contaminated(rng, fs, random_response(rng, amplitude, site), noise, seed)
                spec.extra["site"] = site
                cases.append(spec)
                seed += 1
    amp_err, lat_err, bad = _errors(analyzer, cases)
    assert not bad, f"not measured as responses: {[(s.response, m) for s, m in bad[:3]]}"
    assert np.abs(amp_err).max() <= 0.10, np.abs(amp_err).max()
    assert np.abs(lat_err).max() <= 0.20, np.abs(lat_err).max()


@pytest.mark.parametrize("amplitude", [200.0, 500.0])
@pytest.mark.parametrize("fs", [5000.0, 20000.0, 44100.0])
def test_isolated_epochs_in_30uV_noise(fs, amplitude):
    """Responses of 200 and 500 µV in 30 µV RMS noise (10 Hz - 5 kHz), each the first
    stimulus at its site (a fresh analyzer: no learned response shape), every one of a
    different shape.

    Measured directly (peak-to-peak after the background is removed): no estimator can
    hold 10 % on every epoch here (see the oracle test below), and without the response's
    shape the noise riding on the peaks biases the peak-to-peak value upward. A response
    is never reported absent, nor voided.
    """
    rng = np.random.default_rng(7 + int(fs))
    cases = []
    for seed in range(60):
        spec = contaminated(rng, fs, random_response(rng, amplitude, Site.VAGUS), 30.0, seed, ecg_uV=20.0, hum_uV=5.0)
        cases.append(spec)
    amp_err, lat_err, bad = _errors(None, cases)
    assert not bad, [(m.invalid_reason, m.amplitude_uV) for _s, m in bad]
    # (measured over these seeds: 200 µV -> 63-68 % of epochs within 10 %, median +4-5 %;
    # 500 µV -> 97-100 %, median +0.6-1.4 %)
    small = amplitude < 500
    assert abs(np.median(amp_err)) <= (0.08 if small else 0.03)
    assert np.mean(np.abs(amp_err) <= 0.10) >= (0.55 if small else 0.95)
    assert np.mean(np.abs(lat_err) <= 0.20) >= (0.75 if small else 0.95)
    assert np.abs(amp_err).max() <= (0.40 if small else 0.15)


LOWSNR_RATES = [5000.0, 10000.0, 20000.0, 44100.0]


def lowsnr_sequences(fs: float, sites: int = 12, per_site: int = 30, seed: int = 0):
    """200 µV responses in 30 µV RMS noise: ``sites`` nerve sites (each its own random
    shape) stimulated ``per_site`` times at 1 Hz, all epochs noisy from the first."""
    rng = np.random.default_rng(seed + int(fs))
    return [
        site_sequence(rng, fs, random_response(rng, 200.0, Site.VAGUS), per_site, noise_uV=30.0, seed0=1000 * k)
        for k in range(sites)
    ]


def lowsnr_trial(fs: float, **kw) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """(product's relative amplitude errors, oracle's on the same epochs, latency errors,
    epochs not measured as a valid response) over ``lowsnr_sequences``; one analyzer per
    site sequence (one case), epochs in time order."""
    errs, oracle, lat, bad = [], [], [], []
    for seq in lowsnr_sequences(fs, **kw):
        analyzer = EpochAnalyzer(Settings())
        for spec in seq:
            x, pre, truth = make_epoch(spec)
            s = Stimulus(0, spec.t0_s, Site.VAGUS, Side.L, Source.APS, 1.0, 1.0)
            m = analyzer.measure(x, fs, pre, s, "EMG L")
            oracle.append(known_shape_oracle(spec))
            if m.valid and m.response:
                errs.append(m.amplitude_uV / truth.amplitude_uV - 1.0)
                lat.append(m.latency_ms - truth.latency_ms)
            else:
                errs.append(np.inf)
                lat.append(np.inf)
                bad.append((spec, m))
    return np.array(errs), np.array(oracle), np.array(lat), bad


def test_low_snr_measurement_is_near_the_physical_limit():
    """200 µV responses in 30 µV RMS noise (10 Hz - 5 kHz), with ECG, hum, wander and the
    stimulus artifact, at four sample rates: 48 nerve sites x 30 stimuli = 1440 epochs.

    Target: the share of epochs within 10 % of the true peak-to-peak value is at least 0.9
    times the share the known-shape least-squares oracle reaches on the SAME epochs (its
    own white noise only, shape and latency known: the Cramér-Rao bound); the median error
    at most 5 %; no response is ever reported absent or voided because of the noise.
    The first stimuli at each site are measured directly (no shape learned yet): they count.
    Tolerance: pooled over the rates >= 0.90 (measured 0.94-0.97; one standard error of
    the pooled ratio is about 0.012, so a measurement at the old 0.78 cannot pass by
    luck), each rate >= 0.85 (360 epochs each, standard error about 0.025).
    """
    pooled_p, pooled_o = [], []
    for fs in LOWSNR_RATES:
        errs, oracle, lat, bad = lowsnr_trial(fs)
        assert not bad, [(m.invalid_reason, m.amplitude_uV) for _s, m in bad[:3]]
        share, share_oracle = np.mean(np.abs(errs) <= 0.10), np.mean(np.abs(oracle) <= 0.10)
        assert share >= 0.85 * share_oracle, (fs, share, share_oracle)
        assert abs(np.median(errs)) <= 0.05, (fs, np.median(errs))
        assert np.mean(np.abs(lat) <= 0.20) >= 0.90, fs
        pooled_p.append(share)
        pooled_o.append(share_oracle)
    assert np.mean(pooled_p) >= 0.90 * np.mean(pooled_o), (pooled_p, pooled_o)


@pytest.mark.parametrize("fs", [5000.0, 20000.0, 44100.0])
def test_the_oracle_is_at_the_cramer_rao_bound(fs):
    """The limit behind the target above, checked numerically: the oracle (exact shape and
    latency, only the 30 µV RMS white noise of the epoch, least-squares scale: the
    minimum-variance unbiased estimator here) is unbiased, its spread agrees with the bound
    sqrt(N0/2 / E) from the template energy E (within 15 %), and it still misses 10 % on
    more than one epoch in twenty: no estimator can hold 10 % on every epoch."""
    rng = np.random.default_rng(1)
    errors, bounds = [], []
    for seed in range(300):
        spec = EpochSpec(fs=fs, response=random_response(rng, 200.0, Site.VAGUS), noise_uV=30.0, seed=seed)
        errors.append(known_shape_oracle(spec))
        n, pre = int(round(0.06 * fs)), int(round(0.01 * fs))
        template = response_waveform(spec.response, (np.arange(n) - pre) * 1000.0 / fs)
        energy = np.dot(template, template) / fs  # µV² s
        bounds.append(np.sqrt(30.0**2 / (2 * NOISE_BAND_HZ) / energy))
    errors = np.array(errors)
    assert abs(np.median(errors)) < 0.01  # unbiased
    assert errors.std() == pytest.approx(np.sqrt(np.mean(np.square(bounds))), rel=0.15)
    assert np.mean(np.abs(errors) <= 0.10) < 0.95


def test_clean_response_exact_shape(analyzer):
    """No contamination: amplitude within 3 %, latency within 0.05 ms, onset within 0.15 ms."""
    for fs in RATES:
        for polarity in (1, -1):
            spec = EpochSpec(fs=fs, response=ResponseSpec(800.0, 7.8, polarity=polarity), noise_uV=0.0,
                             artifact_uV=3000.0)
            x, pre, truth = make_epoch(spec)
            m = analyzer.measure(x, fs, pre, stim(), "EMG L")
            assert m.valid and m.response
            assert m.amplitude_uV == pytest.approx(truth.amplitude_uV, rel=0.03)
            assert m.latency_ms == pytest.approx(truth.latency_ms, abs=0.05)
            assert m.onset_latency_ms == pytest.approx(truth.onset_latency_ms, abs=0.15)
            assert m.onset_latency_ms < m.latency_ms


def test_pure_noise_is_never_a_response(analyzer):
    rng = np.random.default_rng(11)
    sites = list(Site)
    counted = 0
    for seed in range(400):
        fs = RATES[seed % len(RATES)]
        noise = float(rng.choice([0.0, 5.0, 10.0, 20.0, 30.0]))
        spec = contaminated(rng, fs, None, noise, seed, ecg_uV=float(rng.uniform(0, 100)),
                            hum_uV=float(rng.uniform(0, 20)))
        x, pre, _ = make_epoch(spec)
        m = analyzer.measure(x, fs, pre, stim(sites[seed % 4]), "EMG L")
        assert not m.response, (spec, m)
        counted += m.valid
        if m.valid:
            assert m.amplitude_uV is not None and m.latency_ms is None and m.onset_latency_ms is None
    assert counted >= 300  # mostly measured as "no response", not just declared invalid


def test_below_threshold_amplitude_is_reported(analyzer):
    spec = EpochSpec(fs=20000.0, response=ResponseSpec(60.0, 4.0), noise_uV=2.0)
    x, pre, truth = make_epoch(spec)
    m = analyzer.measure(x, 20000.0, pre, stim(Site.RLN), "EMG L")
    assert m.valid and not m.response
    assert m.amplitude_uV == pytest.approx(60.0, rel=0.15)
    assert m.latency_ms is None and m.onset_latency_ms is None


def test_threshold_is_a_setting():
    spec = EpochSpec(fs=20000.0, response=ResponseSpec(250.0, 4.0), noise_uV=2.0)
    x, pre, _ = make_epoch(spec)
    assert EpochAnalyzer(Settings()).measure(x, 20000.0, pre, stim(Site.RLN), "EMG L").response
    high = EpochAnalyzer(Settings({"analysis.event_threshold_uV": 300.0}))
    m = high.measure(x, 20000.0, pre, stim(Site.RLN), "EMG L")
    assert m.valid and not m.response and m.amplitude_uV == pytest.approx(250.0, rel=0.05)


def test_auto_threshold_rises_with_noise():
    spec = EpochSpec(fs=20000.0, response=ResponseSpec(150.0, 4.0), noise_uV=30.0, seed=3)
    x, pre, _ = make_epoch(spec)
    plain = EpochAnalyzer(Settings({"analysis.min_snr": 3.0}))
    auto = EpochAnalyzer(Settings({"analysis.min_snr": 3.0, "analysis.auto_threshold": True}))
    a = auto.analyse(x, 20000.0, pre, stim(Site.RLN), "EMG L")
    p = plain.analyse(x, 20000.0, pre, stim(Site.RLN), "EMG L")
    assert p.threshold_uV == 100.0
    assert 100.0 <= a.threshold_uV <= 400.0
    assert a.threshold_uV == pytest.approx(max(100.0, 3.0 * a.noise_uV))


def test_response_window_depends_on_site(analyzer):
    """A deflection at 20 ms is inside the vagal window but after the RLN window."""
    spec = EpochSpec(fs=20000.0, response=ResponseSpec(600.0, 20.0), noise_uV=2.0)
    x, pre, _ = make_epoch(spec)
    assert analyzer.measure(x, 20000.0, pre, stim(Site.VAGUS), "EMG L").response
    m = analyzer.measure(x, 20000.0, pre, stim(Site.RLN), "EMG L")
    assert m.valid and not m.response


def test_ecg_complex_in_window_is_not_a_response(analyzer):
    """A large slow QRS inside the window: a phase far wider than a muscle response."""
    fs = 20000.0
    for phase in np.linspace(0.0, 0.05, 11):
        spec = EpochSpec(fs=fs, response=None, noise_uV=3.0, ecg_uV=300.0, ecg_phase_s=12.0 + 0.005 - phase)
        x, pre, _ = make_epoch(spec)
        m = analyzer.measure(x, fs, pre, stim(Site.VAGUS), "EMG L")
        assert not m.response, (phase, m)


# ----------------------------------------------------------------------------- validity


def _clean(fs=20000.0, amplitude=800.0, **kw):
    spec = EpochSpec(fs=fs, response=ResponseSpec(amplitude, 7.0) if amplitude else None, noise_uV=5.0, **kw)
    return make_epoch(spec)


def test_no_channel(analyzer):
    x, pre, _ = _clean()
    m = analyzer.measure(x, 20000.0, pre, stim(), None)
    assert (m.valid, m.invalid_reason, m.response, m.amplitude_uV, m.channel) == (
        False, InvalidReason.NO_CHANNEL, False, None, None)


@pytest.mark.parametrize(
    "delivered, valid", [(None, True), (1.0, True), (0.96, True), (0.95, True), (0.94, False), (0.0, False)]
)
def test_no_current(analyzer, delivered, valid):
    x, pre, _ = _clean()
    m = analyzer.measure(x, 20000.0, pre, stim(delivered=delivered), "EMG L")
    assert m.valid is valid
    if not valid:
        assert m.invalid_reason is InvalidReason.NO_CURRENT and not m.response and m.amplitude_uV is None


@pytest.mark.parametrize("fs", [5000.0, 20000.0, 44100.0])
@pytest.mark.parametrize(
    "start_ms, dur_ms, rms", [(-10, 60, 3000.0), (20, 10, 5000.0), (-10, 8, 20000.0), (5, 50, 4000.0)]
)
def test_cautery(analyzer, fs, start_ms, dur_ms, rms):
    x, pre, _ = _clean(fs)
    rng = np.random.default_rng(5)
    lo = max(0, pre + int(start_ms * fs / 1000))
    hi = min(len(x), lo + int(dur_ms * fs / 1000))
    x[lo:hi] += white_noise(rng, hi - lo, fs, rms)
    m = analyzer.measure(x, fs, pre, stim(), "EMG L")
    assert m.invalid_reason is InvalidReason.CAUTERY and not m.response


def test_large_response_is_not_cautery(analyzer):
    for fs in RATES:
        x, pre, _ = make_epoch(EpochSpec(fs=fs, response=ResponseSpec(8000.0, 5.0, width_ms=0.4), noise_uV=5.0))
        m = analyzer.measure(x, fs, pre, stim(Site.RLN), "EMG L")
        assert m.valid and m.response, m


def test_saturated_out_of_range(analyzer):
    x, pre, _ = _clean()
    x[pre + 600] = 100000.0
    m = analyzer.measure(x, 20000.0, pre, stim(), "EMG L")
    assert m.invalid_reason is InvalidReason.SATURATED
    x, pre, _ = _clean()
    x[50] = -150000.0  # before the stimulus counts too
    assert analyzer.measure(x, 20000.0, pre, stim(), "EMG L").invalid_reason is InvalidReason.SATURATED


def test_saturated_flat_at_rail(analyzer):
    x, pre, _ = _clean(amplitude=0)
    x[pre + 300 : pre + 340] = 6500.0  # 2 ms stuck at a 6.5 mV rail
    assert analyzer.measure(x, 20000.0, pre, stim(), "EMG L").invalid_reason is InvalidReason.SATURATED
    x, pre, _ = _clean(amplitude=0)
    t = np.arange(len(x)) / 20000.0
    x = np.clip(x + 20000.0 * np.sin(2 * np.pi * 30.0 * t), -5000, 5000)  # movement clipping at both rails
    assert analyzer.measure(x, 20000.0, pre, stim(), "EMG L").invalid_reason is InvalidReason.SATURATED


def test_stimulus_artifact_within_blank_is_harmless(analyzer):
    """Even an out-of-range artifact is fine when it has decayed by the end of the blank."""
    x, pre, truth = _clean(artifact_uV=300000.0, artifact_tau_ms=0.1)
    m = analyzer.measure(x, 20000.0, pre, stim(), "EMG L")
    assert m.valid and m.response
    assert m.amplitude_uV == pytest.approx(truth.amplitude_uV, rel=0.05)


@pytest.mark.parametrize("amplitude", [0.0, 300.0])
def test_artifact_tail(analyzer, amplitude):
    x, pre, _ = _clean(amplitude=amplitude, artifact_uV=20000.0, artifact_tau_ms=2.0)
    m = analyzer.measure(x, 20000.0, pre, stim(), "EMG L")
    assert m.invalid_reason is InvalidReason.ARTIFACT and not m.response


def test_baseline_step(analyzer):
    x, pre, _ = _clean(amplitude=0)
    x[pre + 300 :] += 1500.0
    m = analyzer.measure(x, 20000.0, pre, stim(), "EMG L")
    assert m.invalid_reason is InvalidReason.ARTIFACT and not m.response


def test_non_finite_samples(analyzer):
    x, pre, _ = _clean()
    x[pre + 100] = np.nan
    m = analyzer.measure(x, 20000.0, pre, stim(), "EMG L")
    assert m.invalid_reason is InvalidReason.ARTIFACT and not m.response


def test_short_epoch_is_invalid_not_an_error(analyzer):
    x, pre, _ = _clean()
    m = analyzer.measure(x[: pre + 200], 20000.0, pre, stim(), "EMG L")  # 10 ms after the stimulus
    assert m.invalid_reason is InvalidReason.ARTIFACT


def test_longer_input_uses_the_epoch_only():
    x, pre, truth = _clean()
    longer = np.concatenate([x, np.full(5000, 50000.0)])  # garbage after the window is ignored
    m = EpochAnalyzer(Settings()).measure(longer, 20000.0, pre, stim(), "EMG L")
    plain = EpochAnalyzer(Settings()).measure(x, 20000.0, pre, stim(), "EMG L")
    assert m.valid and m.amplitude_uV == pytest.approx(plain.amplitude_uV)


def test_bad_arguments_raise_clearly(analyzer):
    x, pre, _ = _clean()
    with pytest.raises(ValueError, match="sample rate"):
        analyzer.measure(x, 0.0, pre, stim(), "EMG L")
    with pytest.raises(ValueError, match="pre_samples"):
        analyzer.measure(x, 20000.0, len(x) + 5, stim(), "EMG L")
    with pytest.raises(ValueError, match="1-D"):
        analyzer.measure(np.zeros((2, 1200)), 20000.0, 200, stim(), "EMG L")


# ----------------------------------------------------------------------------- plumbing


def test_zero_phase_matches_scipy():
    rng = np.random.default_rng(0)
    for fs in (5000.0, 20000.0, 44100.0):
        sos = sps.butter(2, [10.0, 1000.0], btype="bandpass", fs=fs, output="sos")
        padlen = int(0.01 * fs)
        zp = _ZeroPhase(sos, padlen)
        x = rng.standard_normal((3, int(0.06 * fs))) * 100 + 40
        ref = sps.sosfiltfilt(sos, x, axis=-1, padtype="odd", padlen=padlen)
        np.testing.assert_allclose(zp(x), ref, rtol=1e-9, atol=1e-9)


def test_batch_equals_single():
    """A batch is measured as the same epochs one at a time in the same order (what is
    learned from earlier epochs included): ``lnm analyze`` and the live monitor agree."""
    rng = np.random.default_rng(3)
    xs, stims = [], []
    shapes = {site: random_response(rng, 400.0, site) for site in Site}
    for i in range(24):
        site = list(Site)[i % 4]
        x, pre, _ = make_epoch(contaminated(rng, 20000.0, shapes[site] if i % 5 else None, 25.0, i))
        xs.append(x)
        stims.append(Stimulus(i, 10.0 + i, site, Side.L, Source.PROBE, 1.0, 1.0))
    channels = ["EMG L"] * 23 + [None]
    batch = EpochAnalyzer(Settings()).analyse_batch(np.array(xs), 20000.0, pre, stims, channels)
    single = EpochAnalyzer(Settings())
    for x, s, c, b in zip(xs, stims, channels, batch, strict=True):
        a = single.analyse(x, 20000.0, pre, s, c)
        m, n = a.measurement, b.measurement
        assert (m.stimulus, m.channel, m.valid, m.invalid_reason, m.response) == (
            n.stimulus, n.channel, n.valid, n.invalid_reason, n.response)
        for u, v in ((m.amplitude_uV, n.amplitude_uV), (m.latency_ms, n.latency_ms),
                     (m.onset_latency_ms, n.onset_latency_ms), (a.noise_uV, b.noise_uV)):
            assert (u is None and v is None) or u == pytest.approx(v, rel=1e-9, abs=1e-9)
        assert (a.method, a.detail, a.threshold_uV) == (b.method, b.detail, b.threshold_uV)
    assert any(b.method == "template" for b in batch)


def test_filtered_waveform_for_display(analyzer):
    fs = 20000.0
    x, pre, truth = _clean(fs, amplitude=800.0, wander_uV=400.0)
    y = analyzer.filtered(x, fs, pre)
    assert y.shape == (pre + 1000,)
    assert abs(np.mean(y[10:pre])) < 5.0  # baseline at zero
    assert np.ptp(y[pre + 30 : pre + 500]) == pytest.approx(800.0, rel=0.05)
    assert np.max(np.abs(y[pre - 2 : pre + 30])) < 100.0  # artifact blanked


def test_board_epoch_uses_the_ipsilateral_channel(analyzer):
    fs = 20000
    xl, pre, _ = make_epoch(EpochSpec(fs=fs, response=ResponseSpec(900.0, 8.0), noise_uV=5.0, seed=1))
    xr, _, _ = make_epoch(EpochSpec(fs=fs, response=ResponseSpec(300.0, 6.0), noise_uV=5.0, seed=2))
    counts = np.round(np.vstack([xl, xr]) * 1000 / 50).astype(np.int32)  # 50 nV per count
    ep = StimEpoch(1_000_000, 7, Output.APS, 1000, 990, 100, fs, pre, 50, counts)
    left = analyzer.measure_board_epoch(ep, stim(side=Side.L))
    right = analyzer.measure_board_epoch(ep, stim(side=Side.R))
    assert left.channel == "EMG L" and left.amplitude_uV == pytest.approx(900.0, rel=0.05)
    assert right.channel == "EMG R" and right.amplitude_uV == pytest.approx(300.0, rel=0.05)
    only_right = StimEpoch(1_000_000, 7, Output.APS, 1000, 990, 100, fs, pre, 50, counts[1:])
    assert analyzer.measure_board_epoch(only_right, stim(side=Side.R)).invalid_reason is InvalidReason.NO_CHANNEL
    assert analyzer.measure_board_epoch(only_right, stim(side=Side.L)).invalid_reason is InvalidReason.NO_CHANNEL
    m = analyzer.measure_board_epoch(only_right, stim(side=Side.R), channel_labels=["EMG R"])
    assert m.channel == "EMG R" and m.amplitude_uV == pytest.approx(300.0, rel=0.05)
    wrong = analyzer.measure_board_epoch(only_right, stim(side=Side.L), ["EMG R"])
    assert wrong.invalid_reason is InvalidReason.NO_CHANNEL


@pytest.mark.parametrize("fs", [5000.0, 20000.0])
@pytest.mark.parametrize("next_ms", [33.3, 49.9, 50.0 - 1e-9])
def test_other_stimuli_inside_the_epoch_are_blanked(analyzer, fs, next_ms):
    """A fast probe train: the next stimulus's artifact lands inside this epoch."""
    from emg_synth import stim_artifact

    x, pre, truth = make_epoch(EpochSpec(fs=fs, response=ResponseSpec(600.0, 4.0), noise_uV=5.0))
    t_ms = (np.arange(len(x)) - pre) * 1000.0 / fs
    nxt = pre + int(next_ms * fs / 1000.0)
    x = x + stim_artifact(t_ms - (nxt - pre) * 1000.0 / fs, 20000.0)
    m = analyzer.measure(x, fs, pre, stim(Site.RLN), "EMG L", other_onsets=[nxt])
    assert m.valid and m.response
    assert m.amplitude_uV == pytest.approx(truth.amplitude_uV, rel=0.05)
    assert m.latency_ms == pytest.approx(truth.latency_ms, abs=0.1)
    y = analyzer.filtered(x, fs, pre, other_onsets=[nxt])
    assert np.max(np.abs(y[nxt - 2 :])) < 200.0
