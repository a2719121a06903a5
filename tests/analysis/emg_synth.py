"""Synthetic laryngeal EMG with known truth, for the analysis tests and benchmark.

Evoked responses are biphasic compound muscle action potentials built from two Gaussian
phases; their true peak-to-peak amplitude, first-major-peak latency and onset latency are
computed on a 1 µs grid with the definitions of ``recording-exchange.md``. Contaminants:
stimulus artifact (exponential decay from the stimulus), ECG (QRS-like complexes at a
heart rate), mains hum, breathing wander, white amplifier noise, electrocautery bursts,
rail clipping and steps. Free-running streams add motor-unit potential trains and bursts.

White noise is specified as its RMS over the amplifier band 10 Hz - 5 kHz (a spectral
density); at sample rates below 10 kHz the anti-alias filter removes the part above
Nyquist, as a real ADC front end does.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from scipy import signal as sps

NOISE_BAND_HZ = 5000.0
_FINE_HZ = 1_000_000.0  # 1 µs grid for the truth
_FINE_T = np.arange(-20.0, 60.0, 1000.0 / _FINE_HZ)


@dataclass(frozen=True)
class ResponseSpec:
    amplitude_uV: float  # true peak-to-peak
    peak_ms: float  # true latency of the first major peak
    polarity: int = 1  # sign of the first phase
    width_ms: float = 0.6  # Gaussian sigma of the first phase
    ratio: float = 0.8  # second-phase / first-phase magnitude
    gap_ms: float = 1.8  # second phase centre after the first


@dataclass(frozen=True)  # (shared: ``response_truth`` keeps its answers)
class Truth:
    amplitude_uV: float
    latency_ms: float
    onset_latency_ms: float


def _shape(spec: ResponseSpec, t_ms: np.ndarray, c1: float) -> np.ndarray:
    w1 = spec.width_ms
    w2 = spec.width_ms * 1.3
    g1 = np.exp(-0.5 * ((t_ms - c1) / w1) ** 2)
    g2 = np.exp(-0.5 * ((t_ms - c1 - spec.gap_ms) / w2) ** 2)
    return spec.polarity * (g1 - spec.ratio * g2)


@functools.lru_cache(maxsize=4096)  # (a spec is asked for up to three times per epoch)
def response_truth(spec: ResponseSpec) -> tuple[float, float, Truth]:
    """(centre of the first phase in ms, scale, truth) so the response matches ``spec``."""
    t = _FINE_T
    # the shape is zero to double precision beyond 12 widths of its phases: computed where it is not
    reach = 12.0 * 1.3 * abs(spec.width_ms) + 0.5
    lo = np.searchsorted(t, min(0.0, spec.gap_ms) - reach)
    hi = np.searchsorted(t, max(0.0, spec.gap_ms) + reach)
    t = t[lo:hi]
    raw = _shape(spec, t, 0.0)
    scale = spec.amplitude_uV / (raw.max() - raw.min())
    y = raw * scale
    peak_i, onset_t = _first_major_peak(t, y)
    c1 = spec.peak_ms - t[peak_i]
    onset = onset_t + c1
    return c1, scale, Truth(spec.amplitude_uV, spec.peak_ms, onset)


def _first_major_peak(t: np.ndarray, y: np.ndarray) -> tuple[int, float]:
    a = np.abs(y)
    big = a >= 0.5 * a.max()
    first = int(np.argmax(big))
    sign = np.sign(y[first])
    # the end of the run of big samples of that sign that starts at ``first``
    outside = np.flatnonzero(~(big[first:] & (np.sign(y[first:]) == sign)))
    end = first + int(outside[0]) if outside.size else len(y)
    peak = first + int(np.argmax(a[first:end]))
    below = np.nonzero(a[:peak] <= 0.1 * a[peak])[0]
    return peak, float(t[below[-1]])


def response_waveform(spec: ResponseSpec, t_ms: np.ndarray) -> np.ndarray:
    c1, scale, _ = response_truth(spec)
    return _shape(spec, t_ms, c1) * scale


def white_noise(rng: np.random.Generator, n: int, fs: float, rms_uV: float) -> np.ndarray:
    """White noise of ``rms_uV`` over 0-5 kHz, anti-aliased when ``fs`` < 10 kHz."""
    if rms_uV <= 0:
        return np.zeros(n)
    density = rms_uV / np.sqrt(NOISE_BAND_HZ)
    nyq = fs / 2
    band = min(nyq, NOISE_BAND_HZ)
    x = rng.standard_normal(n) * density * np.sqrt(nyq)  # white up to Nyquist
    if band < nyq:
        x = sps.sosfilt(_anti_alias(band, fs), x)
    return x


@functools.lru_cache(maxsize=64)
def _anti_alias(band: float, fs: float) -> np.ndarray:
    return sps.butter(8, band, fs=fs, output="sos")


def ecg(t_s: np.ndarray, amplitude_uV: float, rate_bpm: float = 72.0, phase_s: float = 0.0,
        sharpness: float = 1.0) -> np.ndarray:
    """QRS-like complexes (R up, S down, ~40 ms / sharpness) at a steady heart rate."""
    if amplitude_uV == 0:
        return np.zeros_like(t_s)
    period = 60.0 / rate_bpm
    tau = np.mod(t_s - phase_s, period)
    tau = np.where(tau > period / 2, tau - period, tau) * sharpness  # nearest beat
    r = np.exp(-0.5 * (tau / 0.008) ** 2)
    s = 0.35 * np.exp(-0.5 * ((tau - 0.022) / 0.010) ** 2)
    q = 0.15 * np.exp(-0.5 * ((tau + 0.018) / 0.006) ** 2)
    return amplitude_uV * (r - s - q)


def hum(t_s: np.ndarray, amplitude_uV: float, freq_hz: float = 50.0, phase: float = 0.3) -> np.ndarray:
    return amplitude_uV * np.sin(2 * np.pi * freq_hz * t_s + phase) + 0.2 * amplitude_uV * np.sin(
        2 * np.pi * 3 * freq_hz * t_s + 2 * phase
    )


def wander(t_s: np.ndarray, amplitude_uV: float, freq_hz: float = 0.25, phase: float = 1.0) -> np.ndarray:
    return amplitude_uV * np.sin(2 * np.pi * freq_hz * t_s + phase)


def stim_artifact(t_ms: np.ndarray, amplitude_uV: float, tau_ms: float = 0.15) -> np.ndarray:
    """Starts at the stimulus (t=0), a 0.1 ms pulse then an exponential tail."""
    out = np.zeros_like(t_ms)
    on = t_ms >= 0
    out[on] = amplitude_uV * np.exp(-t_ms[on] / tau_ms)
    pulse = (t_ms >= 0) & (t_ms < 0.1)
    out[pulse] = -amplitude_uV * 1.5
    return out


@dataclass
class EpochSpec:
    fs: float = 20000.0
    response: ResponseSpec | None = None
    noise_uV: float = 5.0
    ecg_uV: float = 0.0
    ecg_phase_s: float = 0.0
    ecg_rate_bpm: float = 72.0
    hum_uV: float = 0.0
    hum_hz: float = 50.0
    wander_uV: float = 0.0
    artifact_uV: float = 3000.0
    artifact_tau_ms: float = 0.15
    t0_s: float = 12.0  # absolute time of the stimulus, for ECG/hum/wander phase
    pre_ms: float = 10.0
    post_ms: float = 50.0
    seed: int = 0
    extra: dict = field(default_factory=dict)


def make_epoch(spec: EpochSpec) -> tuple[np.ndarray, int, Truth | None]:
    """(samples in µV, pre_samples, truth or None) for one stimulus epoch."""
    rng = np.random.default_rng(spec.seed)
    pre = int(round(spec.pre_ms * spec.fs / 1000))
    post = int(round(spec.post_ms * spec.fs / 1000))
    n = pre + post
    t_ms = (np.arange(n) - pre) * 1000.0 / spec.fs
    t_s = spec.t0_s + t_ms / 1000.0
    x = white_noise(rng, n, spec.fs, spec.noise_uV)
    x += ecg(t_s, spec.ecg_uV, spec.ecg_rate_bpm, spec.ecg_phase_s)
    x += hum(t_s, spec.hum_uV, spec.hum_hz)
    x += wander(t_s, spec.wander_uV)
    x += stim_artifact(t_ms, spec.artifact_uV, spec.artifact_tau_ms)
    truth = None
    if spec.response is not None:
        x += response_waveform(spec.response, t_ms)
        truth = response_truth(spec.response)[2]
    return x, pre, truth


# ----------------------------------------------------------------------------- streams


@dataclass(frozen=True)
class Episode:
    channel: int
    onset_s: float
    duration_s: float
    kind: str  # "burst" or "train"
    amplitude_uV: float  # peak amplitude of the motor-unit potentials


def mup(t_ms: np.ndarray, amplitude_uV: float, width_ms: float = 0.5) -> np.ndarray:
    """A triphasic motor-unit potential centred at 0 (peak |value| == amplitude)."""
    u = t_ms / width_ms
    y = -u * np.exp(-0.5 * u**2) * (1.0 - 0.15 * u**2)
    return amplitude_uV * y / np.max(np.abs(y))


def add_episode(x: np.ndarray, fs: float, ep: Episode, rng: np.random.Generator) -> None:
    """Add a burst (dense, irregular MUPs) or a train (regular MUP firing) to ``x[ch]``."""
    if ep.kind == "train":
        rate = rng.uniform(8.0, 25.0)
        count = max(2, int(round(ep.duration_s * rate)) + 1)
        times = np.linspace(ep.onset_s, ep.onset_s + ep.duration_s, count)
        times[1:-1] += rng.normal(0, 0.002, count - 2)
    else:
        count = max(2, int(ep.duration_s * rng.uniform(40, 90)))
        times = np.sort(rng.uniform(ep.onset_s, ep.onset_s + ep.duration_s, count))
        times[0] = ep.onset_s
        times[-1] = ep.onset_s + ep.duration_s
    times = times[(times >= ep.onset_s) & (times <= ep.onset_s + ep.duration_s)]
    half = int(0.004 * fs)
    kernel_t = np.arange(-half, half + 1) * 1000.0 / fs
    for tt in times:
        amp = ep.amplitude_uV * rng.uniform(0.7, 1.0) * rng.choice([-1, 1])
        c = int(round(tt * fs))
        lo, hi = c - half, c + half + 1
        if lo < 0 or hi > x.shape[1]:
            continue
        x[ep.channel, lo:hi] += mup(kernel_t, amp, rng.uniform(0.35, 0.7))


def make_stream(
    fs: float,
    duration_s: float,
    *,
    episodes: tuple[Episode, ...] = (),
    noise_uV: float = 5.0,
    ecg_uV: float = 0.0,
    ecg_rate_bpm: float = 72.0,
    ecg_sharpness: float = 1.0,
    hum_uV: float = 0.0,
    hum_hz: float = 50.0,
    wander_uV: float = 0.0,
    cautery: tuple[tuple[float, float], ...] = (),  # (onset_s, duration_s), both channels
    cautery_uV: float = 8000.0,
    seed: int = 0,
) -> np.ndarray:
    """Two-channel free-running EMG (µV), shape (2, n)."""
    rng = np.random.default_rng(seed)
    n = int(round(duration_s * fs))
    t = np.arange(n) / fs
    x = np.empty((2, n))
    for ch in range(2):
        x[ch] = white_noise(rng, n, fs, noise_uV)
        x[ch] += ecg(t, ecg_uV * (1.0 if ch == 0 else 0.8), ecg_rate_bpm, 0.1, ecg_sharpness)
        x[ch] += hum(t, hum_uV, hum_hz, 0.3 + ch)
        x[ch] += wander(t, wander_uV, 0.25, 1.0 + ch)
    for ep in episodes:
        add_episode(x, fs, ep, rng)
    for onset, dur in cautery:
        lo, hi = int(onset * fs), min(n, int((onset + dur) * fs))
        burst = rng.standard_normal((2, hi - lo)) * cautery_uV
        env = np.ones(hi - lo)
        ramp = min(len(env) // 4, int(0.005 * fs))
        if ramp:
            env[:ramp] = np.linspace(0.2, 1, ramp)
        x[:, lo:hi] += burst * env
    return x


# ----------------------------------------------------------------------------- recordings


@dataclass(frozen=True)
class StimEvent:
    """A stimulus in a synthetic recording and the response it evokes on its side."""

    t_s: float
    side: int  # 0 = EMG L, 1 = EMG R
    response: ResponseSpec | None
    artifact_uV: float = 3000.0


class SyntheticSignal:
    """One channel of a long synthetic recording, generated slice by slice (µV, float64).

    Background: band-limited white noise (a repeating 2^20-sample table, offset per
    channel), ECG, hum and wander. Each stimulus adds its artifact to both channels and
    its response to the ipsilateral one. Deterministic for any slice, so hours of data
    need no memory.
    """

    _TABLE = 1 << 20

    def __init__(self, fs: float, n: int, channel: int, stims: tuple[StimEvent, ...] | list[StimEvent], *,
                 noise_uV: float = 5.0, ecg_uV: float = 20.0, hum_uV: float = 5.0, wander_uV: float = 100.0,
                 cautery: tuple[tuple[float, float], ...] = (), cautery_uV: float = 8000.0, seed: int = 0):
        self.fs, self.n, self.channel = float(fs), int(n), channel
        rng = np.random.default_rng(seed * 2 + channel)
        self.table = white_noise(rng, self._TABLE, fs, noise_uV)
        self.cautery_table = white_noise(rng, self._TABLE, fs, cautery_uV)
        self.ecg_uV, self.hum_uV, self.wander_uV = ecg_uV * (1.0 if channel == 0 else 0.8), hum_uV, wander_uV
        self.cautery = tuple(cautery)
        self.stims = sorted(stims, key=lambda s: s.t_s)
        self.onsets = np.array([int(round(s.t_s * fs)) for s in self.stims], dtype=np.int64)
        self.pre = int(round(0.010 * fs))
        self.post = int(round(0.060 * fs))
        self._kernels: dict = {}

    def __len__(self) -> int:
        return self.n

    def _kernel(self, ev: StimEvent) -> np.ndarray:
        resp = ev.response if ev.side == self.channel else None
        key = (resp, ev.artifact_uV)
        k = self._kernels.get(key)
        if k is None:
            t_ms = (np.arange(-self.pre, self.post) * 1000.0 / self.fs)
            k = stim_artifact(t_ms, ev.artifact_uV * (1.0 if ev.side == self.channel else 0.5))
            if resp is not None:
                k = k + response_waveform(resp, t_ms)
            self._kernels[key] = k
        return k

    def __getitem__(self, index: slice) -> np.ndarray:
        a, b, _ = index.indices(self.n)
        if b <= a:
            return np.zeros(0)
        idx = np.arange(a, b)
        x = self.table[(idx + 7919 * self.channel) % self._TABLE].copy()
        t = idx / self.fs
        if self.ecg_uV:
            x += ecg(t, self.ecg_uV, 72.0, 0.1)
        if self.hum_uV:
            x += hum(t, self.hum_uV, 50.0, 0.3 + self.channel)
        if self.wander_uV:
            x += wander(t, self.wander_uV, 0.25, 1.0 + self.channel)
        for c0, dur in self.cautery:
            lo, hi = max(a, int(c0 * self.fs)), min(b, int((c0 + dur) * self.fs))
            if hi > lo:
                x[lo - a : hi - a] += self.cautery_table[np.arange(lo, hi) % self._TABLE]
        i0 = np.searchsorted(self.onsets, a - self.post)
        i1 = np.searchsorted(self.onsets, b + self.pre)
        for i in range(i0, i1):
            k = self._kernel(self.stims[i])
            s0 = self.onsets[i] - self.pre
            lo, hi = max(a, s0), min(b, s0 + len(k))
            if hi > lo:
                x[lo - a : hi - a] += k[lo - s0 : hi - s0]
        return x


# ----------------------------------------------------------------------------- a monitored patient's background


@dataclass(frozen=True)
class PatientBackground:
    """What the tube electrodes pick up besides the evoked responses (µV, Hz).

    ECG: QRS complexes (and a T wave) at a heart rate with beat-to-beat variation;
    ``ecg_sharpness`` 1 gives an R wave of 8 ms SD, 1.6 gives 5 ms (as the virtual
    board's). Hum: mains fundamental with 2nd and 3rd harmonics. Wander: breathing.
    """

    noise_uV: float = 7.5  # white, RMS over 10 Hz - 5 kHz
    ecg_uV: float = 50.0  # R-wave amplitude (sign: polarity on this channel)
    heart_bpm: float = 75.0
    hrv: float = 0.04  # SD of the beat interval / its mean
    ecg_sharpness: float = 1.6
    hum_uV: float = 5.0
    hum_hz: float = 50.0
    wander_uV: float = 200.0
    breath_hz: float = 0.25


def heartbeats(rng: np.random.Generator, duration_s: float, bpm: float, hrv: float) -> np.ndarray:
    """R-wave times (s) over ``duration_s`` (plus a beat either side)."""
    period = 60.0 / bpm
    n = int(duration_s / period) + 4
    intervals = period * np.clip(1.0 + hrv * rng.standard_normal(n), 0.6, 1.4)
    return -period * rng.uniform(0.2, 1.0) + np.cumsum(intervals)


def ecg_complex(tau_s: np.ndarray, amplitude_uV: float, sharpness: float = 1.6) -> np.ndarray:
    """One heartbeat as a neck electrode sees it, ``tau_s`` from its R wave: Q, R, S, T."""
    tau = tau_s * sharpness
    r = np.exp(-0.5 * (tau / 0.008) ** 2)
    s = 0.35 * np.exp(-0.5 * ((tau - 0.022) / 0.010) ** 2)
    q = 0.15 * np.exp(-0.5 * ((tau + 0.018) / 0.006) ** 2)
    t_wave = 0.25 * np.exp(-0.5 * ((tau_s - 0.25) / 0.04) ** 2)
    return amplitude_uV * (r - s - q + t_wave)


def background_recording(rng: np.random.Generator, fs: float, duration_s: float, bg: PatientBackground) -> np.ndarray:
    """One channel of background (µV): white noise, ECG, hum, breathing wander."""
    n = int(round(duration_s * fs))
    t = np.arange(n) / fs
    x = white_noise(rng, n, fs, bg.noise_uV)
    half = int(0.45 * fs)
    for beat in heartbeats(rng, duration_s, bg.heart_bpm, bg.hrv):
        c = int(round(beat * fs))
        lo, hi = max(0, c - half), min(n, c + half)
        if hi > lo:
            x[lo:hi] += ecg_complex(t[lo:hi] - beat, bg.ecg_uV, bg.ecg_sharpness)
    phase = rng.uniform(0, 2 * np.pi, 3)
    for k, share in ((1, 1.0), (2, 0.1), (3, 0.25)):
        x += share * bg.hum_uV * np.sin(2 * np.pi * k * bg.hum_hz * t + phase[k - 1])
    x += bg.wander_uV * np.sin(2 * np.pi * bg.breath_hz * t + rng.uniform(0, 2 * np.pi))
    return x


def add_evoked(x: np.ndarray, fs: float, t_s: float, response: ResponseSpec | None, artifact_uV: float = 3000.0,
               pre_ms: float = 10.0, post_ms: float = 60.0) -> Truth | None:
    """Add a stimulus artifact (and ``response``) at ``t_s`` to the channel ``x`` in place."""
    c = int(round(t_s * fs))
    lo, hi = max(0, c - int(pre_ms * fs / 1000)), min(len(x), c + int(post_ms * fs / 1000))
    t_ms = (np.arange(lo, hi) - c) * 1000.0 / fs
    x[lo:hi] += stim_artifact(t_ms, artifact_uV)
    if response is None:
        return None
    x[lo:hi] += response_waveform(response, t_ms)
    return response_truth(response)[2]


def known_shape_oracle(spec: EpochSpec) -> float:
    """Relative error of the least-squares scale of the exact response (shape and latency
    known) in the epoch's own white noise, nothing else: the estimator at the Cramér-Rao
    bound, for comparison with a measurement of the same epoch (``make_epoch(spec)``)."""
    pre = int(round(spec.pre_ms * spec.fs / 1000))
    n = pre + int(round(spec.post_ms * spec.fs / 1000))
    t_ms = (np.arange(n) - pre) * 1000.0 / spec.fs
    template = response_waveform(spec.response, t_ms)
    x = template + white_noise(np.random.default_rng(spec.seed), n, spec.fs, spec.noise_uV)
    return float(np.dot(x, template) / np.dot(template, template) - 1.0)


def site_sequence(rng: np.random.Generator, fs: float, base: ResponseSpec, n: int, *, noise_uV: float,
                  t0_s: float = 100.0, rate_hz: float = 1.0, seed0: int = 0, amplitude_spread: float = 0.1,
                  latency_jitter_ms: float = 0.05, ecg_uV: float = 20.0, hum_uV: float = 5.0,
                  wander_uV: float = 500.0) -> list[EpochSpec]:
    """``n`` stimuli of one nerve site in time order, as a monitor sees them: the same
    response shape each time (same nerve, same electrodes), its amplitude within
    +-``amplitude_spread`` of ``base``'s and its latency jittered; each epoch with its own
    white noise, ECG phase, hum phase (one mains frequency per sequence), wander and
    stimulus artifact."""
    mains = float(rng.choice([50.0, 60.0]))
    out = []
    for j in range(n):
        r = ResponseSpec(
            amplitude_uV=base.amplitude_uV * float(rng.uniform(1 - amplitude_spread, 1 + amplitude_spread)),
            peak_ms=base.peak_ms + float(rng.normal(0.0, latency_jitter_ms)), polarity=base.polarity,
            width_ms=base.width_ms, ratio=base.ratio, gap_ms=base.gap_ms,
        )
        out.append(EpochSpec(
            fs=fs, response=r, noise_uV=noise_uV, ecg_uV=ecg_uV, ecg_phase_s=float(rng.uniform(0, 1)),
            hum_uV=hum_uV, hum_hz=mains, wander_uV=float(rng.uniform(0, wander_uV)),
            artifact_uV=float(rng.uniform(500, 8000)), seed=seed0 + j,
            t0_s=t0_s + j / rate_hz + float(rng.uniform(0, 0.02)),
        ))
    return out
