"""The continuous vocal-fold EMG of the virtual patient, generated in vectorised blocks.

Owns: ``EmgGenerator``, which renders the two channels (left, right; microvolts,
float32) sample by sample index: broadband background noise (scaled by electrode
impedance), mains hum (grows with electrode imbalance, huge with the ground lead off),
ECG spikes, breathing baseline wander and respiratory modulation of the background
(both proportional to vocal-fold contact, i.e. the tube factor), spontaneous EMG from
nerve irritation (asynchronous bursts and regular trains of motor-unit potentials),
electrocautery bursts (very large broadband noise that saturates the ADC), additive
overlays (the evoked responses and stimulus artifacts from ``physiology.Patient``),
and flat traces for a channel whose electrode is off.
May import: the standard library, numpy, ``firmware_bridge.sim.physiology`` (no scipy: the
board starts fast).

Speed: everything is whole-block numpy work on precomputed tables (a circular
band-limited noise table, one tiled period of mains hum, templates for ECG and motor-unit
potentials); Python runs once per block and per overlay, never per sample. The
background (noise, hum, breathing, ECG) is a pure function of the sample index and of the
patient's state, so it is generated ahead in blocks of ``AHEAD`` samples and generated
again whenever that state changes; what happens at a given moment (responses, artifacts,
motor-unit potentials, cautery, a lead coming off) is added when its samples are due.

What it does NOT model: the amplifier's own filters beyond the noise bandwidth, DC
electrode offsets and their drift, individual motor units of tonic laryngeal activity,
the radio-frequency content of electrocautery (only its demodulated broadband effect),
60 Hz mains unless a patient sets ``mains_hz`` to 60, and movement artifacts.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from firmware_bridge.messages import Electrode
from firmware_bridge.sim.physiology import EMG_ELECTRODES, SIDES, Patient, PhysiologyError

NOISE_TABLE_SAMPLES = 1 << 18
MAX_BLOCK = 1 << 15  # longest block rendered in one call (samples)
AHEAD = 4096  # background generated ahead (samples) while nothing it depends on changes


@functools.lru_cache(maxsize=8)
def _noise_table(fs: int) -> np.ndarray:
    """Unit-RMS band-limited Gaussian noise, fixed for a sample rate: white noise shaped
    in the frequency domain by the magnitude of a 2nd-order Butterworth band-pass
    (10 Hz - 5 kHz, the amplifier's bandwidth). Circular, so the table wraps seamlessly."""
    rng = np.random.default_rng(0x7AB1E + fs)
    white = rng.standard_normal(NOISE_TABLE_SAMPLES)
    f = np.fft.rfftfreq(NOISE_TABLE_SAMPLES, 1.0 / fs)
    low, high = 10.0, min(5000.0, 0.45 * fs)
    with np.errstate(divide="ignore"):
        gain = 1.0 / np.sqrt((1.0 + (low / f) ** 4) * (1.0 + (f / high) ** 4))
    gain[0] = 0.0
    x = np.fft.irfft(np.fft.rfft(white) * gain, n=NOISE_TABLE_SAMPLES)
    x /= np.sqrt(np.mean(x * x))
    table = x.astype(np.float32)
    table.flags.writeable = False
    return table


@functools.lru_cache(maxsize=8)
def _hum_table(fs: int, mains_hz: int) -> tuple[np.ndarray, int]:
    """One period of mains hum (fundamental + third harmonic), tiled for slicing."""
    period = fs // math.gcd(fs, mains_hz)
    reps = (MAX_BLOCK + 2 * period) // period + 1
    k = np.arange(period * reps, dtype=np.float64)
    theta = 2 * np.pi * mains_hz * k / fs
    table = (np.sin(theta) + 0.25 * np.sin(3 * theta + 0.7)).astype(np.float32)
    return table, period


@functools.lru_cache(maxsize=8)
def _ecg_template(fs: int) -> tuple[np.ndarray, int]:
    """Unit R-wave ECG beat as seen on the neck electrodes; returns (template, R index)."""
    t = np.arange(-0.05, 0.42, 1.0 / fs)
    g = lambda mu, sd, a: a * np.exp(-0.5 * ((t - mu) / sd) ** 2)  # noqa: E731
    beat = g(-0.014, 0.004, -0.15) + g(0.0, 0.005, 1.0) + g(0.013, 0.005, -0.3) + g(0.25, 0.04, 0.25)
    return beat.astype(np.float32), int(round(0.05 * fs))


@functools.lru_cache(maxsize=32)
def _mup_template(fs: int, sigma_ms: float) -> np.ndarray:
    """A triphasic motor-unit potential (peak-to-peak 1)."""
    u = np.arange(-5 * sigma_ms, 5 * sigma_ms, 1000.0 / fs) / sigma_ms
    w = -(1.0 - u * u) * np.exp(-0.5 * u * u)
    return (w / (w.max() - w.min())).astype(np.float32)


@dataclass
class _Overlay:
    start: int
    data: np.ndarray  # (2, n) or (n,)
    channel: int | None = None  # None: both channels (data 2-D)

    @property
    def end(self) -> int:
        return self.start + self.data.shape[-1]


@dataclass
class _Irritation:
    side: str
    kind: str  # burst | train
    start: int
    end: int
    rate_hz: float
    amplitude_uV: float
    next_k: float
    sigma_ms: float


@dataclass
class _Cautery:
    start: int
    end: int
    rms_uV: float


class EmgGenerator:
    """Renders the continuous two-channel EMG of ``patient``.

    Sample ``k`` is at board time ``t0 + k / fs``. ``render(k0, n)`` must be called for
    consecutive ranges (it keeps the state of the noise, the heartbeat and the trains);
    overlays may be added for any sample at or after the next one to render.
    """

    def __init__(self, patient: Patient, fs: int = 20000, t0: float = 0.0) -> None:
        self.patient = patient
        self._rng = np.random.default_rng(patient.background_seed())
        self.configure(fs, t0)

    def configure(self, fs: int, t0: float) -> None:
        """(Re)start acquisition at ``fs`` with sample 0 at board time ``t0``."""
        p = self.patient.params
        self.fs = int(fs)
        self.t0 = float(t0)
        self.next_k = 0
        self._noise = _noise_table(self.fs)
        self._noise_off = [int(self._rng.integers(0, NOISE_TABLE_SAMPLES)) for _ in range(3)]
        hum, self._hum_period = _hum_table(self.fs, int(round(p.mains_hz)))
        phases = [int(self._rng.integers(0, self._hum_period)) for _ in SIDES]
        span = MAX_BLOCK + self._hum_period
        self._hum2 = np.stack([hum[ph:ph + span] for ph in phases])  # each channel's own phase
        self._ramp = np.arange(MAX_BLOCK, dtype=np.float32)
        self._ecg, self._ecg_r = _ecg_template(self.fs)
        self._ecg_gain = np.array([[p.left.ecg_uV], [-0.8 * p.right.ecg_uV]], dtype=np.float32)
        # the heartbeat: a fixed schedule of R-wave sample indices, extended as needed
        self._ecg_rng = np.random.default_rng(int(self._rng.integers(0, 2**63)))
        self._beats: list[float] = [float(self._rng.uniform(0.0, 60.0 / p.heart_rate_bpm)) * self.fs]
        self._bg: np.ndarray | None = None  # background generated ahead (a view of _bg_buf)
        # work buffers, reused block after block (what is rendered is copied out of them)
        self._bg_buf = np.empty((2, MAX_BLOCK), dtype=np.float32)
        self._g_buf = np.empty((2, MAX_BLOCK), dtype=np.float32)
        self._breath_buf = np.empty(MAX_BLOCK, dtype=np.float32)
        self._bg_k0 = 0
        self._bg_key: int | None = None
        self._resp_phase = float(self._rng.uniform(0, 2 * np.pi))
        self._overlays: list[_Overlay] = []
        self._irritations: list[_Irritation] = []
        self._cautery: list[_Cautery] = []
        self._col_key: int | None = None  # patient background_version the cached columns are for
        self._col = np.empty((4, 2, 1), dtype=np.float32)
        self._flat: list[int] = []
        self.last_block_saturated = False

    # ---------------------------------------------------------------- additions

    def k_of(self, t: float) -> int:
        """First sample index at or after board time ``t``."""
        return max(int(math.ceil((t - self.t0) * self.fs - 1e-6)), 0)

    def t_of(self, k: int) -> float:
        return self.t0 + k / self.fs

    def add_overlay(self, k: int, data: np.ndarray, channel: int | None = None) -> None:
        if k < self.next_k:  # the part already rendered is gone
            cut = self.next_k - k
            if cut >= data.shape[-1]:
                return
            data, k = data[..., cut:], self.next_k
        self._overlays.append(_Overlay(int(k), data, channel))

    def add_cautery(self, t: float, duration_s: float, rms_uV: float = 60000.0) -> None:
        if not (0 < duration_s <= 600):
            raise PhysiologyError(f"duration_s={duration_s!r} out of range 0-600 s")
        if not (0 < rms_uV <= 1e6):
            raise PhysiologyError(f"rms_uV={rms_uV!r} out of range 0-1000000 uV")
        k = self.k_of(t)
        self._cautery.append(_Cautery(k, k + int(duration_s * self.fs), float(rms_uV)))

    def add_irritation(self, t: float, side: str, kind: str = "train", duration_s: float | None = None,
                       rate_hz: float | None = None, amplitude_uV: float | None = None) -> None:
        side = str(side).upper()
        if side not in SIDES:
            raise PhysiologyError(f"side must be one of L, R (got {side!r})")
        kind = str(kind).lower()
        if kind not in ("burst", "train"):
            raise PhysiologyError(f"irritation kind must be burst or train (got {kind!r})")
        duration_s = (0.25 if kind == "burst" else 5.0) if duration_s is None else float(duration_s)
        if not (0 < duration_s <= 600):
            raise PhysiologyError(f"duration_s={duration_s!r} out of range 0-600 s")
        rate_hz = (150.0 if kind == "burst" else 40.0) if rate_hz is None else float(rate_hz)
        if not (1 <= rate_hz <= 300):
            raise PhysiologyError(f"rate_hz={rate_hz!r} out of range 1-300 Hz")
        amplitude_uV = (250.0 if kind == "burst" else 180.0) if amplitude_uV is None else float(amplitude_uV)
        if not (0 < amplitude_uV <= 5000):
            raise PhysiologyError(f"amplitude_uV={amplitude_uV!r} out of range 0-5000 uV")
        k = self.k_of(t)
        self._irritations.append(_Irritation(
            side, kind, k, k + int(duration_s * self.fs), rate_hz, amplitude_uV, float(k),
            float(self._rng.uniform(0.3, 0.5)),
        ))

    def active(self, t: float) -> dict[str, bool]:
        """What is going on at board time ``t`` (for status and tests)."""
        k = self.k_of(t)
        return {
            "cautery": any(c.start <= k < c.end for c in self._cautery),
            "irritation": any(i.start <= k < i.end for i in self._irritations),
        }

    # ---------------------------------------------------------------- rendering

    def render(self, k0: int, n: int, out: np.ndarray | None = None) -> np.ndarray:
        """Samples ``k0 .. k0 + n - 1`` of both channels, in microvolts (float32); written
        into ``out`` (float32, shape (2, n)) when given, else into a new array."""
        if k0 != self.next_k:
            raise PhysiologyError(f"render must continue at sample {self.next_k} (asked for {k0})")
        x = np.empty((2, n), dtype=np.float32) if out is None else out
        pos = 0
        while pos < n:
            m = min(MAX_BLOCK, n - pos)
            x[:, pos:pos + m] = self._background(k0 + pos, m)
            pos += m
        if self._irritations:
            self._add_irritation(k0, n, self.t_of(k0))
        if self._overlays:
            self._add_overlays(x, k0, n)
        if self._cautery:
            self._add_cautery(x, k0, n)
        for ch in self._flat:
            x[ch] = 0.0
        self.next_k = k0 + n
        return x

    def _noise_at(self, i: int, k0: int, n: int) -> np.ndarray:
        """Noise stream ``i`` at samples ``k0 ..`` (a pure function of the index)."""
        p = (self._noise_off[i] + k0) % NOISE_TABLE_SAMPLES
        if p + n <= NOISE_TABLE_SAMPLES:
            return self._noise[p:p + n]
        return np.concatenate((self._noise[p:], self._noise[: p + n - NOISE_TABLE_SAMPLES]))

    def _background(self, k0: int, n: int) -> np.ndarray:
        """The background of samples ``k0 ..`` (from what was generated ahead if still valid)."""
        pt = self.patient
        bg = self._bg
        key = pt.background_version
        if (bg is not None and self._bg_key == key and self._bg_k0 <= k0
                and k0 + n <= self._bg_k0 + bg.shape[1]):
            return bg[:, k0 - self._bg_k0: k0 - self._bg_k0 + n]
        t = self.t_of(k0)
        steady = pt.background_steady(t)
        if not steady or self._col_key != key:
            self._columns(t)
            self._col_key = key if steady else None
        self._flat = [ch for ch, side in enumerate(SIDES) if not pt.channel_ok(side)]
        m = min(max(n, AHEAD), MAX_BLOCK) if steady else n
        self._bg = self._render_background(k0, m)
        self._bg_k0 = k0
        self._bg_key = key if steady else None
        return self._bg[:, :n]

    def _render_background(self, k0: int, n: int) -> np.ndarray:
        """The background of samples ``k0 .. k0 + n - 1`` (n <= MAX_BLOCK), in a work buffer."""
        par = self.patient.params
        fs = self.fs
        x = self._bg_buf[:, :n]
        # breathing: one phase vector for both channels
        w_resp = 2 * np.pi * par.resp_rate_per_min / 60.0 / fs
        ph0 = math.fmod(self._resp_phase + w_resp * k0, 2 * math.pi)
        breath = np.multiply(self._ramp[:n], np.float32(w_resp), out=self._breath_buf[:n])
        breath += np.float32(ph0)
        np.sin(breath, out=breath)
        col = self._col  # rms, rms * respiratory modulation, wander, hum (per channel)
        g = np.multiply(col[1], breath, out=self._g_buf[:, :n])  # background modulated with breathing
        g += col[0]  # (vocal-fold contact)
        np.multiply(self._noise_at(0, k0, n), g[0], out=x[0])
        np.multiply(self._noise_at(1, k0, n), g[1], out=x[1])
        np.multiply(col[2], breath, out=g)  # baseline wander
        x += g
        hp = k0 % self._hum_period
        np.multiply(col[3], self._hum2[:, hp:hp + n], out=g)
        x += g
        self._add_ecg(x, k0, n)
        return x

    def _columns(self, t: float) -> None:
        """Per-channel amplitudes of the background at ``t`` (cached while steady)."""
        pt = self.patient
        par = pt.params
        ground_off = Electrode.GROUND in pt.lead_off
        nmb = pt.nmb_factor(t)
        for ch, side in enumerate(SIDES):
            sp = par.left if ch == 0 else par.right
            zp, zn = (pt.impedance_ohm[e] for e in EMG_ELECTRODES[side])
            contact = pt.tube_factor(t, side)
            rms = sp.noise_uV * math.sqrt(0.7 + 0.3 * (zp + zn) / 4000.0)
            hum_amp = sp.hum_uV + 4.0 * abs(zp - zn) / 1000.0
            if ground_off:
                hum_amp = hum_amp * 20.0 + 500.0
            self._col[:, ch, 0] = (rms, rms * sp.resp_modulation * min(contact * nmb, 1.5),
                                   sp.wander_uV * min(contact, 1.5), hum_amp)

    def _add_ecg(self, x: np.ndarray, k0: int, n: int) -> None:
        par = self.patient.params
        end = k0 + n
        r, length = self._ecg_r, self._ecg.shape[0]
        beats = self._beats
        while beats[-1] - r < end:
            rr = 60.0 / par.heart_rate_bpm * (1.0 + float(self._ecg_rng.normal(0.0, 0.03)))
            beats.append(beats[-1] + rr * self.fs)
        drop = 0
        while drop < len(beats) - 1 and int(beats[drop]) - r + length <= self.next_k:
            drop += 1  # wholly before anything still to be generated
        if drop:
            del beats[:drop]
        for b in beats:
            start = int(b) - r
            if start >= end:
                break
            a, z = max(start, k0), min(start + length, end)
            if z > a:
                x[:, a - k0: z - k0] += self._ecg_gain * self._ecg[a - start: z - start]

    def _add_irritation(self, k0: int, n: int, t: float) -> None:
        end = k0 + n
        keep = []
        for irr in self._irritations:
            if irr.end <= k0:
                continue
            keep.append(irr)
            if irr.start >= end:
                continue
            side = irr.side
            ch = 0 if side == "L" else 1
            gain = self.patient.muscle_factor(t, side)
            while irr.next_k < min(end, irr.end):
                k = int(irr.next_k)
                if irr.kind == "burst":
                    sigma = float(self._rng.uniform(0.25, 0.5))
                    a = irr.amplitude_uV * float(self._rng.uniform(0.3, 1.0)) * (1 if self._rng.random() < 0.5 else -1)
                    irr.next_k += float(self._rng.exponential(self.fs / irr.rate_hz))
                else:
                    sigma = irr.sigma_ms
                    slow = 0.85 + 0.15 * math.sin(2 * math.pi * 0.7 * (k - irr.start) / self.fs)
                    a = irr.amplitude_uV * slow
                    irr.next_k += self.fs / irr.rate_hz * (1.0 + float(self._rng.normal(0.0, 0.02)))
                if k >= k0 and gain > 0:
                    self.add_overlay(k, _mup_template(self.fs, round(sigma, 2)) * np.float32(a * gain), ch)
        self._irritations = keep

    def _add_overlays(self, x: np.ndarray, k0: int, n: int) -> None:
        end = k0 + n
        keep = []
        for ov in self._overlays:
            if ov.start >= end:
                keep.append(ov)
                continue
            a, b = max(ov.start, k0), min(ov.end, end)
            if b > a:
                src = ov.data[..., a - ov.start:b - ov.start]
                if ov.channel is None:
                    x[:, a - k0:b - k0] += src
                else:
                    x[ov.channel, a - k0:b - k0] += src
            if ov.end > end:
                keep.append(ov)
        self._overlays = keep

    def _add_cautery(self, x: np.ndarray, k0: int, n: int) -> None:
        end = k0 + n
        self._cautery = [c for c in self._cautery if c.end > k0]
        for c in self._cautery:
            a, b = max(c.start, k0), min(c.end, end)
            if b <= a:
                continue
            for ch in range(2):
                x[ch, a - k0:b - k0] += self._noise_at(2, a + 977 * ch, b - a) * c.rms_uV
