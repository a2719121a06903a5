"""What is not the response in a stimulus epoch: the slow background (ECG, breathing
wander, mains hum) and the noise that competes with a response.

Owns: ``Background`` (a smooth-plus-mains model of an epoch's background, fitted with
the response left out), ``MainsProfile`` (the mains components present on each channel,
learned over the epochs of a case), ``NoiseBand`` (the filter and scale of the competing-noise
estimate for one sample rate) and ``robust_rms``.
May import: numpy, scipy.signal. Pure: no I/O, no clock; the only state that outlives a
call is the filter and basis designs and ``MainsProfile``.

Background. Heartbeat complexes (a QRS lasts 60-100 ms; its phases are 5-10 ms wide),
breathing wander and mains hum (50 or 60 Hz and their 2nd and 3rd harmonics) are large
next to a small response and bend its peaks: a QRS slope of 5 µV/ms adds 10 µV across
the 2 ms between the two phases of a response; 10 µV of hum adds up to 6 µV. They are
modelled over the whole epoch as a cubic B-spline with knots every ``KNOT_MS`` (smooth
enough to follow a QRS, too stiff to follow a response phase of 0.3-1.5 ms) plus sines
and cosines at 50, 100, 150, 60, 120 and 180 Hz (each only where it is present on the
channel or clearly present in the epoch, so the model does not carry noise into the
response), fitted by least squares on the samples
where the response is not (the artifact blank and the response are left out; a small
second-difference penalty carries the spline smoothly across the gap). The fit is done
on every ``decimation``-th sample (the background has nothing above a few hundred Hz).

Noise. What can be mistaken for a response, or can bend its peaks, is the broadband noise
of the amplifier, the electrodes and the background EMG in the response band. It is
measured on a copy of the peak waveform high-passed at ``HIGHPASS_HZ`` (2nd order
Butterworth, zero phase, above the ECG, the wander and the mains fundamental), as a
robust RMS (the 10 % of samples furthest from the median left out, so a QRS or a
motor-unit potential in the reference stretch does not inflate it), and scaled back to the full peak band assuming
the noise is white there (the factor comes from the two filters' responses at the actual
sample rate).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal as sps

HIGHPASS_HZ = 150.0  # above ECG (QRS energy < ~60 Hz), wander and the 50/60 Hz fundamental
TRIM_KEEP = 0.9  # the noise RMS is taken over this share of the reference samples (nearest the median)
TRIM_VARIANCE = 0.6231  # variance of a unit Gaussian within its central 90 %
KNOT_MS = 5.0  # B-spline knot spacing of the slow background
MAINS_HZ = (50.0, 60.0)
MAINS_HARMONICS = (1, 2, 3)
PENALTY = 1e-2  # second-difference penalty on the spline, relative to the data weight
MAINS_CHI2 = 12.0  # a mains component is modelled when its pair's chi-square reaches this (p ~ 0.0025)
PROFILE_DECAY = 0.95  # weight kept per epoch in the mains profile (memory of about 20 epochs)
PROFILE_MIN = 8  # epochs before the profile is trusted
PRESENT_CHI = 4.0  # mean chi-square of a present pair (noise alone: 2)
PROFILE_STALE_S = 600.0  # a channel not measured for this long starts a new profile
PROFILE_CLIP = 1000.0  # one epoch's chi-square counts at most this much (a burst of hum)
BACKGROUND_RATE_HZ = 5000.0  # the background is fitted on samples this far apart (or closer)


class NoiseBand:
    """High-pass for the noise copy and the white-noise scale back to the peak band."""

    def __init__(self, fs: float, peak_sos: np.ndarray) -> None:
        self.fs = float(fs)
        hp = min(HIGHPASS_HZ, 0.2 * self.fs)
        self.sos = sps.butter(2, hp, btype="highpass", fs=self.fs, output="sos")
        f = np.linspace(0.0, 0.5 * self.fs, 8193)[1:]
        _, hz = sps.sosfreqz(peak_sos, worN=f, fs=self.fs)
        _, hh = sps.sosfreqz(self.sos, worN=f, fs=self.fs)
        white = f <= 5000.0  # the amplifier band
        pz = (np.abs(hz) ** 4)[white]  # forward-backward filtering: |H|^2 in amplitude
        ph = pz * (np.abs(hh) ** 4)[white]
        self.scale = float(np.sqrt(pz.sum() / ph.sum())) if ph.sum() > 0 else 1.0


def median_rows(rows: np.ndarray) -> np.ndarray:
    """The median along the last axis (per row), as ``np.median(rows, axis=-1)`` gives it for
    finite data, without its overheads: the middle element, or the mean of the two middle
    ones for an even count, so that the median of ``-rows`` is exactly minus that of
    ``rows`` (a response measures the same with the electrodes' polarity swapped)."""
    n = rows.shape[-1]
    m = n // 2
    if n % 2:
        return np.partition(rows, m, axis=-1)[..., m]
    part = np.partition(rows, (m - 1, m), axis=-1)
    return np.asarray(0.5 * (part[..., m - 1] + part[..., m]))


def robust_rms(rows: np.ndarray) -> np.ndarray:
    """Per-row robust RMS: the RMS of the 90 % of samples nearest the median, scaled to a
    Gaussian sigma. A QRS, a motor-unit potential or a spike in the reference stretch falls
    in the 10 % left out; unlike the median absolute deviation it keeps most of the
    precision of a plain RMS (about 85 % efficiency against 37 %)."""
    n = rows.shape[1]
    dev = np.abs(rows - median_rows(rows)[:, None])
    k = max(1, int(np.ceil(TRIM_KEEP * n)) - 1)
    cut = np.partition(dev, k, axis=1)[:, k]
    inside = dev <= cut[:, None]
    ms = np.sum(np.where(inside, dev, 0.0) ** 2, axis=1) / np.maximum(inside.sum(axis=1), 1)
    return np.asarray(np.sqrt(ms / TRIM_VARIANCE))


def _cubic_bspline(u: np.ndarray) -> np.ndarray:
    """The cardinal cubic B-spline on [0, 4)."""
    out = np.zeros_like(u)
    a = (u >= 0) & (u < 1)
    out[a] = u[a] ** 3 / 6.0
    a = (u >= 1) & (u < 2)
    v = u[a]
    out[a] = (-3 * v**3 + 12 * v**2 - 12 * v + 4) / 6.0
    a = (u >= 2) & (u < 3)
    v = u[a]
    out[a] = (3 * v**3 - 24 * v**2 + 60 * v - 44) / 6.0
    a = (u >= 3) & (u < 4)
    out[a] = (4 - u[a]) ** 3 / 6.0
    return out


class Background:
    """The background model for one epoch geometry (sample rate, onset, length).

    ``basis`` (samples x terms) is evaluated on every sample; ``idx`` are the samples the
    fit uses; ``penalty`` acts on the spline terms (the first ``n_spline``).
    """

    def __init__(self, fs: float, pre: int, n: int) -> None:
        self.fs, self.pre, self.n = float(fs), int(pre), int(n)
        self.decimation = max(1, int(round(self.fs / BACKGROUND_RATE_HZ)))
        t = (np.arange(n) - pre) * 1000.0 / self.fs  # ms from the stimulus
        span = max(t[-1] - t[0], 1e-9)
        intervals = max(1, int(np.ceil(span / KNOT_MS)))
        h = span / intervals
        self.n_spline = intervals + 3
        u = (t - t[0]) / h
        cols = [_cubic_bspline(u - (j - 3)) for j in range(self.n_spline)]
        for f in MAINS_HZ:
            for k in MAINS_HARMONICS:
                if f * k < 0.4 * self.fs:
                    w = 2.0 * np.pi * f * k * t / 1000.0
                    cols += [np.cos(w), np.sin(w)]
        self.basis = np.stack(cols, axis=1)
        self.idx = np.arange(0, n, self.decimation)
        self.fit_basis = self.basis[self.idx]
        d2 = np.diff(np.eye(self.n_spline), 2, axis=0)
        p = np.zeros((self.basis.shape[1], self.basis.shape[1]))
        p[: self.n_spline, : self.n_spline] = d2.T @ d2
        self.penalty = p
        self.hp_basis = self.basis  # replaced by the owner with the basis in its noise band

    def normal_equations(self, weights: np.ndarray, columns: np.ndarray | None = None,
                         drop: np.ndarray | None = None) -> np.ndarray:
        """(rows, terms, terms) weighted normal matrices, regularised (``weights`` on ``idx``).

        ``drop`` (rows, terms): terms held at zero (a large ridge) in that row.
        """
        x = self.fit_basis if columns is None else columns
        a = np.matmul(x.T[None, :, :] * weights[:, None, :], x)
        ns = self.n_spline
        scale = np.maximum(np.trace(a[:, :ns, :ns], axis1=1, axis2=2) / ns, 1e-12)
        a = a + scale[:, None, None] * (PENALTY * self.penalty + 1e-9 * np.eye(a.shape[1]))[None]
        if drop is not None:
            a = a + (1e6 * scale)[:, None, None] * (drop[:, :, None] * np.eye(a.shape[1])[None])
        return np.asarray(a)

    @property
    def n_pairs(self) -> int:
        """Number of mains (cosine, sine) pairs in the model at this sample rate."""
        return int((self.basis.shape[1] - self.n_spline) // 2)

    def solve(self, z: np.ndarray, keep: np.ndarray, noise: np.ndarray, peak_hz: float) -> _Stage:
        """First stage: every term fitted to each row of ``z`` (rows, n) on the samples where
        ``keep`` is true, and the chi-square of each mains pair given the row's ``noise``."""
        w = keep[:, self.idx].astype(np.float64)
        b = np.einsum("nk,in->ik", self.fit_basis, w * z[:, self.idx])
        a = self.normal_equations(w)
        c = np.linalg.solve(a, b[:, :, None])[:, :, 0]
        ns = self.n_spline
        pair = np.zeros((len(z), self.n_pairs))
        if self.n_pairs:
            var = np.diagonal(np.linalg.inv(a), axis1=1, axis2=2)[:, ns:]
            correlated = max(1.0, self.fs / self.decimation / (2.0 * peak_hz))
            sigma2 = np.maximum(noise, 1e-9)[:, None] ** 2 * correlated
            chi = c[:, ns:] ** 2 / np.maximum(var * sigma2, 1e-30)
            pair = chi[:, 0::2] + chi[:, 1::2]
        return _Stage(w, b, c, pair)

    def finish(self, stage: _Stage, present: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(coefficients, dropped terms): a mains pair is modelled when it is known to be
        present on the channel (``present``, rows x pairs, from ``MainsProfile``) or clearly
        present in this epoch (chi-square >= ``MAINS_CHI2``); the others are left out, so the
        model does not carry noise into the gap left by the response."""
        c = stage.coef
        drop = np.zeros_like(c, dtype=bool)
        if self.n_pairs:
            weak = stage.chi < MAINS_CHI2
            if present is not None:
                weak &= ~present
            drop[:, self.n_spline :] = np.repeat(weak, 2, axis=1)
            if weak.any():
                a = self.normal_equations(stage.weights, drop=drop)
                c = np.linalg.solve(a, stage.rhs[:, :, None])[:, :, 0]
        return c, drop

    def fit(self, z: np.ndarray, keep: np.ndarray, noise: np.ndarray, peak_hz: float,
            present: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Both stages: (coefficients, dropped terms, chi-square of each mains pair); the
        background is ``coefficients @ basis.T``."""
        stage = self.solve(z, keep, noise, peak_hz)
        c, drop = self.finish(stage, present)
        return c, drop, stage.chi


@dataclass
class _Stage:
    """A first-stage background fit (rows): weights, right-hand sides, coefficients, chi-square."""

    weights: np.ndarray
    rhs: np.ndarray
    coef: np.ndarray
    chi: np.ndarray


class MainsProfile:
    """Which mains components are present on each channel, learned over the epochs.

    Hum is a property of the room and the electrodes, steady over minutes; one epoch
    cannot tell a weak harmonic from noise, the recent epochs together can. For each
    channel (and sample rate) the chi-square of each mains pair is averaged with weight
    ``PROFILE_DECAY`` per epoch; a pair is present when that average reaches
    ``PRESENT_CHI`` (2 is what noise alone gives) after ``PROFILE_MIN`` epochs. Present
    pairs are always modelled, so even a weak harmonic nearly locked in phase to the
    stimuli (a 1 Hz stimulator against 50 Hz mains) does not bend the responses.
    Pure state of one case: ``reset()`` empties it; a channel's profile is also dropped
    when stimulus time goes backwards (a new case) or jumps ahead by ``PROFILE_STALE_S``.
    """

    def __init__(self) -> None:
        self._sum: dict[tuple[str, float], np.ndarray] = {}
        self._weight: dict[tuple[str, float], float] = {}
        self._count: dict[tuple[str, float], int] = {}
        self._last_t: dict[tuple[str, float], float] = {}

    def reset(self) -> None:
        """Forget everything (a new case or recording)."""
        self._sum.clear()
        self._weight.clear()
        self._count.clear()
        self._last_t.clear()

    def present(self, channel: str | None, fs: float, n_pairs: int, t_s: float | None = None) -> np.ndarray:
        """Per pair: known to be present on ``channel`` (for a stimulus at ``t_s``)."""
        key = (str(channel), float(fs))
        last = self._last_t.get(key)
        if t_s is not None and last is not None and not last - 1.0 <= t_s <= last + PROFILE_STALE_S:
            for d in (self._sum, self._weight, self._count, self._last_t):
                d.pop(key, None)
        s = self._sum.get(key)
        if s is None or len(s) != n_pairs or self._count[key] < PROFILE_MIN:
            return np.zeros(n_pairs, dtype=bool)
        return s / self._weight[key] >= PRESENT_CHI

    def update(self, channel: str | None, fs: float, chi: np.ndarray, t_s: float | None = None) -> None:
        """Add one epoch's chi-square per pair for ``channel`` (stimulus at ``t_s``)."""
        if channel is None or not np.all(np.isfinite(chi)):
            return
        key = (str(channel), float(fs))
        s = self._sum.get(key)
        if s is None or len(s) != len(chi):
            self._sum[key], self._weight[key], self._count[key] = np.zeros(len(chi)), 0.0, 0
        self._sum[key] = PROFILE_DECAY * self._sum[key] + np.minimum(chi, PROFILE_CLIP)
        self._weight[key] = PROFILE_DECAY * self._weight[key] + 1.0
        self._count[key] += 1
        if t_s is not None:
            self._last_t[key] = float(t_s)
