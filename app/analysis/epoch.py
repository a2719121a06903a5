"""Measurement of one evoked response: a stimulus epoch in, a ``Measurement`` out.

Owns: ``EpochAnalyzer`` and ``EpochAnalysis``.
May import: numpy, scipy.signal, ``app.analysis.kernel``, ``app.analysis.noise``, ``app.analysis.template``,
``app.model``, ``app.settings``, ``firmware_bridge.messages``.

Pure: no threads, clocks or I/O. The same code measures live epochs from the board and
epochs cut from an EDF+ recording (``lnm analyze``). The analyzer learns from the epochs
it measures (the response shape of each channel and site, the mains hum of each channel):
that state belongs to one case, ``reset()`` forgets it (call it when a case opens; stimulus
time going backwards at a site, as when a new case restarts case time, also drops that
site's shape). Epochs must come in time order; a batch is measured exactly as its rows one
at a time.

Definitions (``shared/specs/recording-exchange.md``, ``shared/reference/clinical-rules.md``):

- The epoch runs from ``pre_samples`` before the stimulus (10 ms from the board) to the end
  of the analysis window (``analysis.window_ms``, 50 ms) after it.
- Stimulus-artifact rejection: from 0.1 ms before the onset to ``analysis.artifact_blank_ms``
  after it, the raw samples are replaced by a straight line (between the means of 0.2 ms
  on either side) before any filtering, so the filter cannot smear the artifact into the
  window. The same is done where the caller says other stimuli fell inside the epoch
  (``other_onsets``, e.g. a fast probe train).
- Baseline: the mean of the pre-stimulus part is removed.
- Band-pass: Butterworth in SOS form designed for the actual sample rate
  (``analysis.bandpass_low_hz`` - ``analysis.bandpass_high_hz``, the upper corner capped at
  45 % of the sample rate), applied forwards and backwards (zero phase). The epoch is
  complete when it arrives, so zero-phase filtering is used live and offline alike. No notch.
  ``EpochAnalyzer.filtered`` gives this waveform for display.
- Peaks are sized and timed on a copy further low-passed (4th order, zero phase) at
  ``analysis.peak_lowpass_hz`` (1 kHz): a laryngeal compound muscle response has
  practically no energy above it, and the copy carries far less noise.
- Noise: the noise that competes with a response, measured in the response band before
  the stimulus and after the window, with ECG, wander and modelled hum left out
  (``app.analysis.noise``). ECG complexes and breathing wander do not raise it.
- Background: ECG, wander and mains hum are modelled over the epoch (a smooth spline plus
  the mains components present) with the response left out, and removed from the peak
  waveform (``app.analysis.noise.Background``); where the response is, is found from the
  largest deflection in the response band, so a QRS in the window neither passes for a
  response nor hides one.
- Response window per nerve site: from the end of the artifact blank to
  ``analysis.response_end_<site>_ms``. Amplitude is the peak-to-peak value of the response
  in it, measured one of two ways (``EpochAnalysis.method``):
  "direct": the peak-to-peak value of the peak waveform with the background removed
  (extremes refined by parabolic interpolation); "template": the peak-to-peak value of the
  site's learned response shape fitted to the epoch (``app.analysis.template``), used when
  the shape is known, the response does not stand out by ``TEMPLATE_MAX_SNR`` noise RMS
  (in clean epochs the direct value is as good) and the shape fits. In 30 µV RMS noise a
  200 µV response is then measured within 10 % about as often as by an estimator that
  knows its exact shape (the physical limit); the direct value is biased upward by the
  noise riding on its peaks.
- First major peak: the first extremum (either polarity) whose magnitude is at least 50 %
  of the largest absolute deflection in the response window (and, in a noisy epoch, at
  least 4.5 noise RMS: a noise spike is not a peak of the response); ``latency_ms`` is the
  time to it. ``onset_latency_ms`` is the last time before that peak at which the response
  was within 10 % of the peak's magnitude of the baseline. With a template, both come from
  the fitted shape. Either way the onset is not earlier than the window's start: a
  departure hidden in the artifact blank was not measured and is reported at the blank's end.
- A response is present when the epoch is valid, the amplitude reaches the event threshold
  (raised up to ``analysis.auto_threshold_max_uV`` by the noise when
  ``analysis.auto_threshold`` is on), the first major peak is a real extremum inside the
  window, and its phase is no wider than ``analysis.max_phase_ms`` (a slow ECG complex or
  wander is not a nerve response).

Validity (first reason that applies): ``no_channel`` (no EMG channel for the side);
``no_current`` (delivered current measured and below set x (1 - tolerance)); ``cautery``
(a 5 ms stretch with RMS >= ``analysis.cautery_rms_uV`` whose robust RMS above the peak
band is at least half that: sustained broadband noise, not a lone spike or a large
response); ``saturated`` (|x| >= ``analysis.saturation_uV``, or identical samples at a rail
>= ``analysis.rail_min_uV`` for ``analysis.flatline_ms``, anywhere outside the artifact
blank); ``artifact`` (non-finite samples, an epoch too short for the response window, the
first major peak within 0.3 ms of the end of the blank (the artifact's tail, not a
nerve), a baseline step >= ``analysis.step_uV`` and at least half the amplitude between
the pre-stimulus part and the end of the window, or an amplitude above the threshold that
does not stand out of the noise by ``analysis.min_snr``). An invalid epoch is never a
response; its amplitude is None.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import signal as sps

from app.model import InvalidReason, Measurement, Site, Stimulus
from app.settings import Settings, load
from app.analysis.kernel import SOSFILT as _SOSFILT
from app.analysis.noise import Background, MainsProfile, NoiseBand, median_rows, robust_rms
from app.analysis.template import (
    DECAY,
    LEARN_MIN_SNR,
    TEMPLATE_MAX_SNR,
    RESHAPE_KEEP,
    SAME_SHAPE,
    ResponseTemplate,
    TemplateBank,
    TemplateFit,
    fit_template,
)
from firmware_bridge.messages import CHANNEL_LABELS, StimEpoch

_MAD_TO_SIGMA = 1.4826
_BLANK_LEAD_MS = 0.1  # blank starts this long before the onset (onset timing jitter)
_ENDPOINT_MS = 0.2  # the line across a blank joins the means of this much signal either side
_CAUTERY_BLOCK_MS = 5.0
_CAUTERY_HF_SHARE = 0.5  # robust RMS above the peak band, as a share of cautery_rms_uV
_STEP_TAIL_MS = 5.0  # the end of the window compared with the pre-stimulus level
_EDGE_GUARD_MS = 0.5  # filter edge left out of the baseline and noise estimates
_ARTIFACT_EDGE_MS = 0.3  # a "peak" this close to the blank end is the artifact's tail
_PEAK_NOISE_SIGMAS = 4.5  # a major peak of a noisy response reaches at least this many noise RMS
_NOISE_GUARD_MS = 1.0  # the pre-stimulus noise reference ends this long before the blank (filter ringing)
_MASK_BEFORE_MS = 4.5  # the response is left out of the background fit from this long before its largest deflection
_MASK_AFTER_MS = 5.5  # to this long after it
_LATE_SIGMAS = 5.0  # after the window, response-band activity above this many noise RMS is not background
_LATE_GUARD_MS = 3.0  # nor is anything this close to it


@dataclass(frozen=True)
class EpochAnalysis:
    """A measurement with what the display and the record want to show beside it."""

    measurement: Measurement
    noise_uV: float | None  # robust RMS of the noise, same band as the peaks
    threshold_uV: float  # the threshold applied (event threshold, or raised by noise)
    max_ms: float | None  # time of the most positive point in the response window
    min_ms: float | None  # time of the most negative point
    window_ms: tuple[float, float]  # response window used (after the stimulus)
    detail: str  # why invalid or why no response; "" for a plain result
    method: str = "direct"  # "template": fitted with the site's learned shape; "direct": peak-to-peak


@dataclass
class _Batch:
    """Working arrays of one ``analyse_batch`` call (rows = epochs)."""

    fs: float
    pre: int
    bs: int  # blank start
    be: int  # blank end (= response window start)
    end: int  # epoch end (end of the analysis window)
    g: int  # filter edge left out at the start
    z: np.ndarray  # peak waveform
    extra: np.ndarray | None  # samples blanked for other stimuli
    se: np.ndarray  # response window end per row (sample index)
    end_ms: list[float]
    background: Background  # the model of ECG, wander and hum for this geometry
    noise: np.ndarray = field(default_factory=lambda: np.zeros(0))
    hn: np.ndarray = field(default_factory=lambda: np.zeros(0))  # the noise copy (response band)
    y: np.ndarray = field(default_factory=lambda: np.zeros(0))  # peak waveform, background removed
    keep: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # samples not blanked
    drop: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # background terms left out
    coef: np.ndarray = field(default_factory=lambda: np.zeros(0))  # background coefficients
    mains_chi: np.ndarray = field(default_factory=lambda: np.zeros(0))  # chi-square of each mains pair
    channels: Sequence[str | None] = ()
    times: np.ndarray = field(default_factory=lambda: np.zeros(0))  # stimulus times (s)
    amp: np.ndarray = field(default_factory=lambda: np.zeros(0))
    t_max: np.ndarray = field(default_factory=lambda: np.zeros(0))
    t_min: np.ndarray = field(default_factory=lambda: np.zeros(0))
    groups: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (window end, its rows), ends increasing

    def __post_init__(self) -> None:
        self.groups = _groups(self.se.tolist())
        k = self.z.shape[0]
        self.amp = np.full(k, np.nan)
        self.t_max = np.full(k, np.nan)
        self.t_min = np.full(k, np.nan)


class _ZeroPhase:
    """Forward-backward ``sosfilt`` with odd extension and cached initial conditions.

    Numerically the same as ``scipy.signal.sosfiltfilt(sos, x, padtype="odd",
    padlen=padlen)`` but without recomputing ``sosfilt_zi`` on every call.
    """

    def __init__(self, sos: np.ndarray, padlen: int) -> None:
        self.sos = np.ascontiguousarray(sos, dtype=np.float64)
        self.zi = sps.sosfilt_zi(sos)  # (sections, 2)
        self.padlen = padlen

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[-1]
        p = min(self.padlen, n - 1)
        if p > 0:
            left = 2.0 * x[:, :1] - x[:, p:0:-1]
            right = 2.0 * x[:, -1:] - x[:, -2 : -p - 2 : -1]
            ext = np.concatenate([left, x, right], axis=1)
        else:
            ext = x
        if _SOSFILT is None:  # pragma: no cover - a scipy without the kernel
            zi = self.zi[:, None, :]
            y: np.ndarray
            y, _ = sps.sosfilt(self.sos, ext, axis=-1, zi=zi * ext[None, :, :1])
            y = y[:, ::-1]
            y, _ = sps.sosfilt(self.sos, y, axis=-1, zi=zi * y[None, :, :1])
            return y[:, ::-1][:, p : p + n]
        # the same, with sosfilt's compiled kernel (in place, on C-ordered float64 rows)
        y = np.ascontiguousarray(ext, dtype=np.float64) if p > 0 else np.array(x, dtype=np.float64, order="C")
        _SOSFILT(self.sos, y, self.zi[None, :, :] * y[:, :1, None])
        y = np.ascontiguousarray(y[:, ::-1])
        _SOSFILT(self.sos, y, self.zi[None, :, :] * y[:, :1, None])
        return y[:, ::-1][:, p : p + n]


def _parabola(y: np.ndarray, i: int) -> tuple[float, float]:
    """(offset in samples, refined value) of the extremum of ``y`` at index ``i``."""
    if 0 < i < len(y) - 1:
        y0, y1, y2 = float(y[i - 1]), float(y[i]), float(y[i + 1])
        d = y0 - 2.0 * y1 + y2
        if d != 0.0:
            off = 0.5 * (y0 - y2) / d
            if -1.0 < off < 1.0:
                return off, y1 - 0.25 * (y0 - y2) * off
    return 0.0, float(y[i])


def _interpolate(x: np.ndarray, a: int, b: int, m: int = 1) -> None:
    """Replace ``x[:, a:b]`` by a straight line between its neighbours (in place): the
    mean of up to ``m`` samples on each side, so one noisy sample does not tilt the line."""
    n = x.shape[1]
    if a > 0 and b < n:
        left, right = x[:, max(0, a - m) : a].mean(axis=1, keepdims=True), x[:, b : b + m].mean(axis=1, keepdims=True)
    elif a > 0:
        left = right = x[:, max(0, a - m) : a].mean(axis=1, keepdims=True)
    elif b < n:
        left = right = x[:, b : b + m].mean(axis=1, keepdims=True)
    else:
        x[:, a:b] = 0.0
        return
    ramp = np.arange(1, b - a + 1) / (b - a + 1)
    x[:, a:b] = left + (right - left) * ramp


def _dilate(mask: np.ndarray, h: int) -> np.ndarray:
    """Per row, true within ``h`` samples of a true sample."""
    c = np.concatenate((np.zeros((mask.shape[0], 1), dtype=np.int64), np.cumsum(mask, axis=1)), axis=1)
    n = mask.shape[1]
    j = np.arange(n)
    return np.asarray((c[:, np.minimum(j + h + 1, n)] - c[:, np.maximum(j - h, 0)]) > 0)


def _checked_batch(samples_uV: np.ndarray, fs: float, pre_samples: int, stimuli: Sequence[Stimulus],
                   channels: Sequence[str | None], other_onsets: Sequence[Sequence[int]] | None,
                   ) -> tuple[np.ndarray, float, int]:
    """(samples as a 2-D float array, sample rate, onset index), or ValueError naming the problem."""
    x = np.asarray(samples_uV, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"a batch of epochs is 2-D (epochs, samples), got shape {x.shape}")
    k, n = x.shape
    if len(stimuli) != k or len(channels) != k:
        raise ValueError(f"{k} epochs need {k} stimuli and {k} channels")
    if other_onsets is not None and len(other_onsets) != k:
        raise ValueError(f"{k} epochs need {k} lists of other onsets")
    fs = float(fs)
    pre = int(pre_samples)
    if not (fs > 0 and np.isfinite(fs)):
        raise ValueError(f"sample rate must be a positive number of Hz, got {fs!r}")
    if not 0 <= pre < n:
        raise ValueError(f"pre_samples {pre} must lie inside the epoch of {n} samples")
    return x, fs, pre


def _groups(ends: Sequence[int]) -> list[tuple[int, np.ndarray]]:
    """The rows of each distinct response window end (``np.unique`` order: ends increasing,
    rows in order), without numpy's overheads for the one or two ends a batch has."""
    rows: dict[int, list[int]] = {}
    for i, e in enumerate(ends):
        rows.setdefault(e, []).append(i)
    return [(e, np.array(rows[e], dtype=np.intp)) for e in sorted(rows)]


def _longest_true_run(mask: np.ndarray) -> int:
    if not mask.any():
        return 0
    padded = np.concatenate(([False], mask, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return int((edges[1::2] - edges[::2]).max())


class EpochAnalyzer:
    """Measures stimulus epochs. Pure; filters are designed once per sample rate."""

    def __init__(self, settings: Settings | None = None) -> None:
        s = settings if settings is not None else load()
        self.settings = s
        self.low_hz = float(s["analysis.bandpass_low_hz"])
        self.high_hz = float(s["analysis.bandpass_high_hz"])
        self.peak_hz = float(s["analysis.peak_lowpass_hz"])
        self.blank_ms = float(s["analysis.artifact_blank_ms"])
        self.window_ms = float(s["analysis.window_ms"])
        self.threshold_uV = float(s["analysis.event_threshold_uV"])
        self.auto_threshold = bool(s["analysis.auto_threshold"])
        self.auto_max_uV = float(s["analysis.auto_threshold_max_uV"])
        self.saturation_uV = float(s["analysis.saturation_uV"])
        self.cautery_uV = float(s["analysis.cautery_rms_uV"])
        self.min_snr = float(s["analysis.min_snr"])
        self.max_phase_ms = float(s["analysis.max_phase_ms"])
        self.rail_uV = float(s["analysis.rail_min_uV"])
        self.flatline_ms = float(s["analysis.flatline_ms"])
        self.step_uV = float(s["analysis.step_uV"])
        self.tolerance = float(s["stim.delivered_tolerance_pct"]) / 100.0
        self.response_end_ms = {
            Site.VAGUS: float(s["analysis.response_end_vagus_ms"]),
            Site.RLN: float(s["analysis.response_end_rln_ms"]),
            Site.EBSLN: float(s["analysis.response_end_ebsln_ms"]),
            Site.UNTAGGED: float(s["analysis.response_end_untagged_ms"]),
        }
        self._filters: dict[tuple[float, str], _ZeroPhase] = {}
        self._noise_bands: dict[float, NoiseBand] = {}
        self._backgrounds: dict[tuple[float, int, int], Background] = {}
        self.templates = TemplateBank()
        self.mains = MainsProfile()

    def reset(self) -> None:
        """Forget what was learned from earlier epochs (response templates, mains profile): a new case."""
        self.templates.reset()
        self.mains.reset()

    # ------------------------------------------------------------------ filters

    def _filter(self, fs: float, kind: str) -> _ZeroPhase:
        key = (float(fs), kind)
        f = self._filters.get(key)
        if f is None:
            if not (fs > 0 and np.isfinite(fs)):
                raise ValueError(f"sample rate must be a positive number of Hz, got {fs!r}")
            high = min(self.high_hz, 0.45 * fs)
            low = min(self.low_hz, 0.5 * high)
            sos = sps.butter(2, [low, high], btype="bandpass", fs=fs, output="sos")
            if kind == "peak" and self.peak_hz < high:
                sos = np.vstack([sos, sps.butter(4, self.peak_hz, fs=fs, output="sos")])
            f = _ZeroPhase(sos, padlen=max(8, int(round(0.010 * fs))))
            self._filters[key] = f
        return f

    def _noise_band(self, fs: float) -> tuple[_ZeroPhase, float]:
        """(zero-phase high-pass for the noise copy, scale back to the peak band)."""
        band = self._noise_bands.get(float(fs))
        if band is None:
            band = NoiseBand(fs, self._filter(fs, "peak").sos)
            self._noise_bands[float(fs)] = band
            self._filters[(float(fs), "noise")] = _ZeroPhase(band.sos, padlen=max(8, int(round(0.010 * fs))))
        return self._filters[(float(fs), "noise")], band.scale

    def _geometry(self, fs: float, pre: int, n: int) -> tuple[int, int, int]:
        """(blank start, blank end, epoch end) as sample indices."""
        end = min(n, pre + int(round(self.window_ms * fs / 1000.0)))
        bs = max(1, pre - int(round(_BLANK_LEAD_MS * fs / 1000.0))) if pre > 0 else 0
        be = min(end - 1, pre + max(1, int(round(self.blank_ms * fs / 1000.0))))
        return bs, max(be, bs), end

    def _prepare(
        self, x: np.ndarray, fs: float, pre: int, others: Sequence[Sequence[int]] | None = None
    ) -> tuple[np.ndarray, int, int, int, np.ndarray | None]:
        """Cut to the epoch, remove the pre-stimulus mean, blank the artifacts (copies).

        Returns the prepared epochs, blank start/end, epoch end, and (when other stimuli
        fall inside) a per-row mask of the samples blanked for them.
        """
        n = x.shape[-1]
        bs, be, end = self._geometry(fs, pre, n)
        xe = np.array(x[:, :end], dtype=np.float64)  # copy
        if bs > 0:
            xe -= xe[:, :bs].mean(axis=1, keepdims=True)
        m = max(1, int(round(_ENDPOINT_MS * fs / 1000.0)))
        if be > bs:
            _interpolate(xe, bs, be, m)
        extra = None
        if others is not None and any(len(o) for o in others):
            lead = int(round(_BLANK_LEAD_MS * fs / 1000.0))
            width = max(1, int(round(self.blank_ms * fs / 1000.0)))
            extra = np.zeros((x.shape[0], end), dtype=bool)
            for i, onsets in enumerate(others):
                for o in onsets:
                    a, b = max(0, int(o) - lead), min(end, int(o) + width)
                    if b > a:
                        _interpolate(xe[i : i + 1], a, b, m)
                        extra[i, a:b] = True
        return xe, bs, be, end, extra

    def filtered(
        self, samples_uV: np.ndarray, fs: float, pre_samples: int, *, other_onsets: Sequence[int] = ()
    ) -> np.ndarray:
        """The display waveform: artifact blanked, band-passed (zero phase), baseline 0.

        Covers the epoch from its first sample to the end of the analysis window (1-D in,
        1-D out; 2-D rows are filtered alike, ``other_onsets`` then applies to every row).
        """
        x = np.atleast_2d(np.asarray(samples_uV, dtype=np.float64))
        if not np.isfinite(x).all():
            x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        others = [list(other_onsets)] * x.shape[0] if len(other_onsets) else None
        xe, bs, _be, _end, _extra = self._prepare(x, fs, int(pre_samples), others)
        y = self._filter(fs, "display")(xe)
        g = min(bs, int(round(_EDGE_GUARD_MS * fs / 1000.0)))
        if bs > g:
            y -= y[:, g:bs].mean(axis=1, keepdims=True)
        return y[0] if np.ndim(samples_uV) == 1 else y

    # ------------------------------------------------------------------ measuring

    def measure(
        self,
        samples_uV: np.ndarray,
        fs: float,
        pre_samples: int,
        stimulus: Stimulus,
        channel: str | None,
        *,
        other_onsets: Sequence[int] = (),
    ) -> Measurement:
        """Measure one epoch (1-D samples in µV; sample ``pre_samples`` is the onset).

        ``other_onsets``: sample indices (in this epoch) where other stimuli fell; their
        artifacts are blanked like this stimulus's own.
        """
        return self.analyse(samples_uV, fs, pre_samples, stimulus, channel, other_onsets=other_onsets).measurement

    def analyse(
        self,
        samples_uV: np.ndarray,
        fs: float,
        pre_samples: int,
        stimulus: Stimulus,
        channel: str | None,
        *,
        other_onsets: Sequence[int] = (),
    ) -> EpochAnalysis:
        x = np.asarray(samples_uV, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"an epoch is one channel: expected 1-D samples, got shape {x.shape}")
        others = [list(other_onsets)] if len(other_onsets) else None
        return self.analyse_batch(x[None, :], fs, pre_samples, [stimulus], [channel], other_onsets=others)[0]

    def measure_board_epoch(
        self, epoch: StimEpoch, stimulus: Stimulus, channel_labels: Sequence[str] | None = None,
        other_onsets: Sequence[int] = (),
    ) -> Measurement:
        """Measure a ``firmware_bridge.messages.StimEpoch`` on the ipsilateral channel.

        ``channel_labels`` names the rows of ``epoch.samples``; by default two rows are
        ``EMG L``, ``EMG R`` (``CHANNEL_LABELS``). With one row (a channel mask) the caller
        must say which it is; otherwise the epoch is ``no_channel``, never the wrong side.
        ``other_onsets``: sample indices in the epoch where other stimuli fall (a fast train's
        next pulse): blanked, and what follows them is no noise reference.
        """
        return self.analyse_board_epoch(epoch, stimulus, channel_labels, other_onsets).measurement

    def analyse_board_epoch(
        self, epoch: StimEpoch, stimulus: Stimulus, channel_labels: Sequence[str] | None = None,
        other_onsets: Sequence[int] = (),
    ) -> EpochAnalysis:
        uv = np.asarray(epoch.samples)
        if uv.ndim == 1:
            uv = uv[None, :]
        labels = list(channel_labels) if channel_labels is not None else (
            list(CHANNEL_LABELS) if uv.shape[0] == len(CHANNEL_LABELS) else []
        )
        want = stimulus.side.channel
        if want not in labels or labels.index(want) >= uv.shape[0]:
            n = max(2, uv.shape[-1])
            return self.analyse_batch(
                np.zeros((1, n)), epoch.sample_rate_hz, min(epoch.pre_samples, n - 1), [stimulus], [None],
            )[0]
        row = labels.index(want)
        x = uv[row : row + 1] * (epoch.nv_per_count / 1000.0)  # this channel only, in µV
        others = [[int(o) for o in other_onsets]] if len(other_onsets) else None
        return self.analyse_batch(x, epoch.sample_rate_hz, epoch.pre_samples, [stimulus], [want],
                                  other_onsets=others)[0]

    def measure_batch(
        self,
        samples_uV: np.ndarray,
        fs: float,
        pre_samples: int,
        stimuli: Sequence[Stimulus],
        channels: Sequence[str | None],
        *,
        other_onsets: Sequence[Sequence[int]] | None = None,
    ) -> list[Measurement]:
        """Measure many epochs of equal length at once (rows of a 2-D array)."""
        batch = self.analyse_batch(samples_uV, fs, pre_samples, stimuli, channels, other_onsets=other_onsets)
        return [a.measurement for a in batch]

    def analyse_batch(
        self,
        samples_uV: np.ndarray,
        fs: float,
        pre_samples: int,
        stimuli: Sequence[Stimulus],
        channels: Sequence[str | None],
        *,
        other_onsets: Sequence[Sequence[int]] | None = None,
    ) -> list[EpochAnalysis]:
        """Measure many epochs of equal length (rows, in time order: templates learn as they go)."""
        x, fs, pre = _checked_batch(samples_uV, fs, pre_samples, stimuli, channels, other_onsets)
        k = x.shape[0]
        finite = np.isfinite(x).all(axis=1)
        if not finite.all():
            x = np.where(np.isfinite(x), x, 0.0)
        xe, bs, be, end, extra = self._prepare(x, fs, pre, other_onsets)
        raw = x[:, :end]
        saturated = self._saturated(raw, fs, bs, be, end, extra)

        # the copy on which peaks are measured
        z = self._filter(fs, "peak")(xe)
        g = min(bs, int(round(_EDGE_GUARD_MS * fs / 1000.0)))
        if bs > g:
            z -= z[:, g:bs].mean(axis=1, keepdims=True)
        cautery = self._cautery(xe, z, fs, end)

        # level step between the pre-stimulus part and the end of the window
        tail = max(1, int(round(_STEP_TAIL_MS * fs / 1000.0)))
        if bs > 0 and end - tail > be:
            step = np.abs(median_rows(raw[:, end - tail : end]) - median_rows(raw[:, :bs]))
        else:
            step = np.zeros(k)

        end_ms = [min(self.response_end_ms.get(st.site, self.window_ms), self.window_ms) for st in stimuli]
        se_all = np.array([pre + int(round(e * fs / 1000.0)) for e in end_ms], dtype=np.int64)
        b = _Batch(fs=fs, pre=pre, bs=bs, be=be, end=end, g=g, z=z, extra=extra, se=se_all, end_ms=end_ms,
                   background=self._background_model(fs, pre, end), channels=channels,
                   times=np.array([st.t_s for st in stimuli], dtype=np.float64))
        b.noise, b.hn = self._noise(b, z)
        self._direct(b, finite & ~cautery & ~saturated & np.array([c is not None for c in channels], dtype=bool))
        # once more without the hum the background model carries (the filter is linear:
        # the response-band copy of the background is that of its basis)
        b.noise = self._noise_of(b, b.hn - b.coef @ b.background.hp_basis.T)
        if self.auto_threshold:
            thresholds = np.minimum(
                np.maximum(self.threshold_uV, self.min_snr * b.noise), max(self.auto_max_uV, self.threshold_uV)
            )
        else:
            thresholds = np.full(k, self.threshold_uV)

        out: list[EpochAnalysis] = []
        for i in range(k):
            stim, channel = stimuli[i], channels[i]
            reason, detail = self._invalid(stim, channel, bool(cautery[i]), bool(saturated[i]), bool(finite[i]),
                                           bool(np.isnan(b.amp[i])))
            out.append(self._conclude(b, i, stim, channel, reason, detail, float(step[i]), float(thresholds[i])))
        return out

    def _invalid(self, stim: Stimulus, channel: str | None, cautery: bool, saturated: bool, finite: bool,
                 too_short: bool) -> tuple[InvalidReason | None, str]:
        """The first validity reason that applies before anything is measured, with its detail."""
        if channel is None:
            return InvalidReason.NO_CHANNEL, f"no EMG channel for side {stim.side.value}"
        if stim.delivered_mA is not None and stim.delivered_mA < (1.0 - self.tolerance) * stim.set_mA:
            return InvalidReason.NO_CURRENT, f"delivered {stim.delivered_mA:g} mA of {stim.set_mA:g} mA set"
        if cautery:
            return InvalidReason.CAUTERY, "broadband burst (electrocautery)"
        if saturated:
            return InvalidReason.SATURATED, "signal at or beyond the amplifier range"
        if not finite:
            return InvalidReason.ARTIFACT, "non-finite samples"
        if too_short:
            return InvalidReason.ARTIFACT, "epoch too short for the response window"
        return None, ""

    # ------------------------------------------------------------------ stages

    def _saturated(self, raw: np.ndarray, fs: float, bs: int, be: int, end: int,
                   extra: np.ndarray | None) -> np.ndarray:
        """Per row: out of range, or flat at a rail, anywhere outside the artifact blanks."""
        k = raw.shape[0]
        if extra is None:
            peak_abs = np.abs(raw[:, be:]).max(axis=1)
            if bs > 0:
                peak_abs = np.maximum(peak_abs, np.abs(raw[:, :bs]).max(axis=1))
        else:
            outside_rows = np.ones((k, end), dtype=bool)
            outside_rows[:, bs:be] = False
            outside_rows &= ~extra
            peak_abs = np.where(outside_rows, np.abs(raw), 0.0).max(axis=1)
        saturated: np.ndarray = peak_abs >= self.saturation_uV
        flat_n = max(2, int(round(self.flatline_ms * fs / 1000.0)))
        for i in np.flatnonzero((peak_abs >= self.rail_uV) & ~saturated):
            v = raw[i]
            keep = np.ones(end, dtype=bool)
            keep[bs:be] = False
            if extra is not None:
                keep &= ~extra[i]
            same = np.concatenate(([False], v[1:] == v[:-1]))
            same |= np.roll(same, -1)
            for level in (v[keep].max(), v[keep].min()):
                if abs(level) >= self.rail_uV and _longest_true_run((v == level) & same & keep) >= flat_n:
                    saturated[i] = True
        return saturated

    def _cautery(self, xe: np.ndarray, z: np.ndarray, fs: float, end: int) -> np.ndarray:
        """Per row: a broadband, sustained burst in some 5 ms block."""
        k = xe.shape[0]
        blk = max(4, int(round(_CAUTERY_BLOCK_MS * fs / 1000.0)))
        nb = end // blk
        cautery = np.zeros(k, dtype=bool)
        if nb:
            xb = xe[:, : nb * blk].reshape(k, nb, blk)
            hb = (xe - z)[:, : nb * blk].reshape(k, nb, blk)
            loud = xb.var(axis=2) >= self.cautery_uV**2
            for i in np.flatnonzero(loud.any(axis=1)):
                # broadband and sustained: the robust RMS above the peak band, so a lone
                # spike or a large muscle response is not taken for cautery
                h = hb[i, loud[i]]
                robust = _MAD_TO_SIGMA * np.median(np.abs(h - np.median(h, axis=1, keepdims=True)), axis=1)
                cautery[i] = bool((robust >= _CAUTERY_HF_SHARE * self.cautery_uV).any())
        return cautery

    def _noise(self, b: _Batch, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(noise per row, the response-band copy of ``x``)."""
        hp, _scale = self._noise_band(b.fs)
        hn = hp(x)
        return self._noise_of(b, hn), hn

    def _noise_of(self, b: _Batch, hn: np.ndarray) -> np.ndarray:
        """The noise that competes with a response (``app.analysis.noise``) per row, from
        the response-band copy ``hn``: before the stimulus and after the window."""
        _hp, scale = self._noise_band(b.fs)
        guard = int(round(_NOISE_GUARD_MS * b.fs / 1000.0))
        noise = np.zeros(hn.shape[0])
        for se, rows in b.groups:
            if b.extra is not None and b.extra[rows].any():
                for i in rows:  # another stimulus in the epoch: its artifact and response are no noise
                    lo, hi = self._noise_stretches(b, int(i), int(se), guard)
                    ref = np.concatenate((hn[i, lo[0] : lo[1]], hn[i, hi[0] : hi[1]]))[None, :]
                    if ref.shape[1] >= 8:
                        noise[i] = robust_rms(ref)[0] * scale
                continue
            ref = np.concatenate((hn[rows, b.g : max(b.g, b.bs - guard)], hn[rows, se : b.end]), axis=1)
            if ref.shape[1] >= 8:
                noise[rows] = robust_rms(ref) * scale
        return noise

    @staticmethod
    def _noise_stretches(b: _Batch, i: int, se: int, guard: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """The reference stretches of row ``i`` when other stimuli fall in its epoch: before
        the stimulus but after the last earlier one's blank, and after the window up to the
        next one's blank (what follows a later stimulus is its response)."""
        extra = b.extra[i] if b.extra is not None else np.zeros(b.end, dtype=bool)
        start, stop = b.g, max(b.g, b.bs - guard)
        before = np.flatnonzero(extra[start:stop])
        if len(before):
            start = min(stop, start + int(before[-1]) + 1 + guard)
        after = np.flatnonzero(extra[se : b.end])
        end = se + int(after[0]) if len(after) else b.end
        return (start, stop), (se, max(se, end))

    def _background_model(self, fs: float, pre: int, n: int) -> Background:
        key = (float(fs), int(pre), int(n))
        m = self._backgrounds.get(key)
        if m is None:
            if len(self._backgrounds) > 16:
                self._backgrounds.clear()
            m = self._backgrounds[key] = Background(fs, pre, n)
            hp, _scale = self._noise_band(fs)
            m.hp_basis = hp(m.basis.T).T  # the basis in the response band (noise copy)
        return m

    def _direct(self, b: _Batch, eligible: np.ndarray) -> None:
        """Background removed with the response left out, then the direct peak-to-peak.

        The response is taken to lie from ``_MASK_BEFORE_MS`` before the largest deflection
        in the response band (the noise copy, which a QRS or wander does not dominate) to
        ``_MASK_AFTER_MS`` after it (both phases of a response are within about 3 ms of each
        other); after the window, stretches with activity in the response band (a later
        response of another structure) are left out too. When removing the background moves
        the largest deflection, the background is fitted once more around it. The mains
        profile learns from the ``eligible`` rows in order (a batch as single epochs).
        """
        k = b.z.shape[0]
        ms = 1000.0 / b.fs
        model = b.background
        keep = np.ones((k, b.end), dtype=bool)
        keep[:, b.bs : b.be] = False
        if b.extra is not None:
            keep &= ~b.extra
        b.keep = keep
        b.y = b.z.copy()
        b.drop = np.zeros((k, model.basis.shape[1]), dtype=bool)
        b.mains_chi = np.full((k, model.n_pairs), np.nan)
        before = int(round(_MASK_BEFORE_MS / ms))
        after = int(round(_MASK_AFTER_MS / ms))
        cols = np.arange(b.end)
        peak_hz = min(self.peak_hz, 0.45 * b.fs)
        _hp, scale = self._noise_band(b.fs)
        guard = int(round(_LATE_GUARD_MS / ms))
        b.coef = np.zeros((k, model.basis.shape[1]))
        groups = []
        for se, rows in b.groups:
            if se > b.end or se - b.be < 4:
                continue  # epoch too short: left NaN
            late = np.abs(b.hn[rows, se:]) > _LATE_SIGMAS * b.noise[rows, None] / scale
            keep[rows, se:] &= ~_dilate(late, guard)
            big = np.argmax(np.abs(b.hn[rows, b.be : se]), axis=1)
            kk = keep[rows] & ~self._around(cols, b.be + big, before, after)
            stage = model.solve(b.z[rows], kk, b.noise[rows], peak_hz)
            b.mains_chi[rows] = stage.chi
            groups.append((se, rows, big, stage))
        present = self._mains_presence(b, eligible, model.n_pairs)
        for se, rows, big, stage in groups:
            b.coef[rows], b.drop[rows] = model.finish(stage, present[rows])
            b.y[rows] = b.z[rows] - b.coef[rows] @ model.basis.T
            moved_to = np.argmax(np.abs(b.y[rows, b.be : se]), axis=1)
            moved = np.abs(moved_to - big) > max(1, before // 2)
            if moved.any():  # once more, around where the response turned out to be
                todo = rows[moved]
                kk = keep[todo] & ~self._around(cols, b.be + moved_to[moved], before, after)
                b.coef[todo], b.drop[todo], _chi = model.fit(b.z[todo], kk, b.noise[todo], peak_hz, present[todo])
                b.y[todo] = b.z[todo] - b.coef[todo] @ model.basis.T
            w = b.y[rows, b.be : se]
            vmax, omax, imax = _extreme_rows(w, 1.0)
            vmin, omin, imin = _extreme_rows(w, -1.0)
            b.amp[rows] = np.maximum(vmax - vmin, 0.0)
            b.t_max[rows] = (b.be + imax + omax - b.pre) * ms
            b.t_min[rows] = (b.be + imin + omin - b.pre) * ms

    @staticmethod
    def _around(cols: np.ndarray, centre: np.ndarray, before: int, after: int) -> np.ndarray:
        """(rows, samples): true from ``before`` samples before each row's ``centre`` to ``after`` after."""
        return (cols[None, :] >= (centre - before)[:, None]) & (cols[None, :] < (centre + after)[:, None])

    def _mains_presence(self, b: _Batch, eligible: np.ndarray, n_pairs: int) -> np.ndarray:
        """Per row, the mains pairs known present on its channel from the earlier rows and
        epochs; the profile learns each eligible row's chi-square in turn."""
        present = np.zeros((len(b.channels), n_pairs), dtype=bool)
        for i, channel in enumerate(b.channels):
            t_s = float(b.times[i])
            present[i] = self.mains.present(channel, b.fs, n_pairs, t_s)
            if eligible[i] and np.isfinite(b.mains_chi[i]).all():
                self.mains.update(channel, b.fs, b.mains_chi[i], t_s)
        return present

    def _conclude(self, b: _Batch, i: int, stim: Stimulus, channel: str | None, reason: InvalidReason | None,
                  detail: str, step: float, thr: float) -> EpochAnalysis:
        """Validity, the estimate (template fit or direct), the response decision; learning."""
        ms = 1000.0 / b.fs
        win = ((b.be - b.pre) * ms, b.end_ms[i])
        n_i = float(b.noise[i])
        a_i = float(b.amp[i]) if not np.isnan(b.amp[i]) else 0.0
        t_max, t_min = float(b.t_max[i]), float(b.t_min[i])
        fit: TemplateFit | None = None
        template, key, joint = None, None, None
        if reason is None and channel is not None and stim.site is not Site.UNTAGGED:
            key = (channel, stim.site.value)
            template = self.templates.get(key, b.fs, stim.t_s)
            if template is not None:
                template.last_t_s = stim.t_s
                if 0 < n_i and a_i < TEMPLATE_MAX_SNR * n_i and template.usable(self.max_phase_ms):
                    fit, joint = self._fit_template(b, i, template, a_i, n_i)
                    if fit.accepted:
                        a_i, t_max, t_min = fit.amplitude_uV, fit.max_ms, fit.min_ms
        if reason is None and step >= self.step_uV and step >= 0.5 * a_i:
            reason, detail = InvalidReason.ARTIFACT, f"baseline step of {step:.0f} uV"
        if reason is None and a_i >= thr and a_i < self.min_snr * n_i:
            reason = InvalidReason.ARTIFACT
            detail = f"{a_i:.0f} uV does not stand out of {n_i:.1f} uV RMS noise"
        response, latency, onset = False, None, None
        if reason is None and a_i >= thr:
            if fit is not None and fit.accepted:
                # the fitted shape may start inside the artifact blank, where nothing was
                # measured: its onset is then the window's start, as a direct measurement gives
                response, latency, onset = True, fit.latency_ms, max(fit.onset_ms, win[0])
            else:
                verdict = self._first_major_peak(b.y[i, b.be : int(b.se[i])], b.be - b.pre, ms, n_i)
                if verdict[0] == "artifact":
                    reason, detail = InvalidReason.ARTIFACT, verdict[1]
                elif verdict[0] == "none":
                    detail = verdict[1]
                else:
                    response, latency, onset = True, verdict[1], verdict[2]
        method = "template" if fit is not None and fit.accepted else "direct"
        if fit is not None and not fit.accepted and not detail:
            detail = f"template not used: {fit.why}"
        if reason is not None:
            m = Measurement(stim, channel, False, reason, False, None, None, None)
            return EpochAnalysis(m, n_i if n_i else None, thr, None, None, win, detail, method)
        if response and key is not None and n_i > 0 and a_i >= LEARN_MIN_SNR * n_i and (
            b.extra is None or not b.extra[i].any()
        ):
            self._learn(b, i, key, stim.t_s, template, fit, joint, latency, a_i, n_i)
        m = Measurement(stim, channel, True, None, response, a_i, latency, onset)
        return EpochAnalysis(m, n_i, thr, t_max, t_min, win, detail, method)

    def _fit_template(self, b: _Batch, i: int, template: ResponseTemplate, direct_uV: float,
                      noise_uV: float) -> tuple[TemplateFit, np.ndarray | None]:
        model = b.background
        idx = model.idx
        ms = 1000.0 / b.fs
        t = (idx - b.pre) * ms
        lo_w = (b.be - b.pre) * ms + _ARTIFACT_EDGE_MS
        used = ~b.drop[i]
        fit, coef = fit_template(
            template, t, b.z[i, idx], b.keep[i, idx].astype(np.float64), model.fit_basis[:, used],
            model.penalty[np.ix_(used, used)], model.n_spline, bg_removed=b.y[i, idx],
            window_ms=(lo_w, b.end_ms[i]), noise_uV=noise_uV, peak_hz=min(self.peak_hz, 0.45 * b.fs),
            direct_uV=direct_uV,
        )
        joint = None
        if fit.accepted and coef is not None:
            joint = b.z[i] - model.basis[:, used] @ coef[1:]
        return fit, joint

    def _learn(self, b: _Batch, i: int, key: tuple[str, str], t_s: float, template: ResponseTemplate | None,
               fit: TemplateFit | None, joint: np.ndarray | None, latency: float | None, a_i: float,
               n_i: float) -> None:
        """Teach the site's template this response (see ``app.analysis.template``)."""
        if latency is None:
            return
        se = int(b.se[i])
        seg = (joint if joint is not None else b.y[i])[b.be : se]
        keep = DECAY
        first = b.be - b.pre
        if fit is not None and not fit.accepted:
            keep = RESHAPE_KEEP  # a response that the template does not fit: a new shape
        elif fit is None and template is not None and template.learned and a_i >= TEMPLATE_MAX_SNR * n_i:
            if template.similarity(first, seg, latency) < SAME_SHAPE:
                keep = RESHAPE_KEEP  # a clean response of another shape
        if template is None:
            template = self.templates.get_or_new(key, b.fs, t_s)
        template.learn(first, seg, latency, a_i, n_i, keep=keep)
        template.last_t_s = t_s

    def _first_major_peak(self, w: np.ndarray, start: int, ms: float, noise_uV: float = 0.0
                          ) -> tuple[Literal["response"], float, float] | tuple[Literal["none", "artifact"], str]:
        """("response", latency_ms, onset_ms) | ("none", why) | ("artifact", why).

        ``w`` is the response window of the peak copy; ``start`` its first sample relative
        to the stimulus onset. A peak of the response stands out of the noise: in a noisy
        epoch the major-peak level is raised to ``_PEAK_NOISE_SIGMAS`` noise RMS (never
        above the largest deflection), so a noise spike before the response is not taken
        for its first major peak (nor for the artifact's tail).
        """
        a = np.abs(w)
        top = float(a.max())
        big = a >= min(top, max(0.5 * top, _PEAK_NOISE_SIGMAS * noise_uV))
        f = int(np.argmax(big))
        sign = 1.0 if w[f] > 0 else -1.0
        signed = w * sign
        lobe = big & (signed > 0)
        tail = lobe[f:]
        run_end = len(w) if tail.all() else f + int(np.argmin(tail))
        p = f + int(np.argmax(a[f:run_end]))
        if p * ms < _ARTIFACT_EDGE_MS:
            return ("artifact", "artifact tail at the start of the window")
        if p == len(w) - 1:
            return ("none", "peak at the end of the response window")
        half = 0.5 * float(signed[p])
        below = np.flatnonzero(signed[:p] < half)
        lo = int(below[-1]) + 1 if len(below) else 0
        after = np.flatnonzero(signed[p:] < half)
        hi = p + int(after[0]) - 1 if len(after) else len(w) - 1
        width = (hi - lo + 1) * ms
        if width > self.max_phase_ms:
            return ("none", f"phase {width:.1f} ms wide: not a nerve response")
        off, vpeak = _parabola(signed, p)
        latency = (start + p + off) * ms
        level = 0.1 * abs(vpeak)
        quiet = np.flatnonzero(a[:p] <= level)
        if len(quiet):
            j = int(quiet[-1])
            aj, aj1 = float(a[j]), float(a[j + 1])
            frac = (level - aj) / (aj1 - aj) if aj1 > aj else 0.0
            onset = (start + j + min(max(frac, 0.0), 1.0)) * ms
        else:
            onset = start * ms
        return ("response", latency, onset)


def _extreme_rows(w: np.ndarray, sign: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: (refined extreme value, sub-sample offset, index) of max (sign 1) or min."""
    idx = np.argmax(w * sign, axis=1) if sign > 0 else np.argmin(w, axis=1)
    r = np.arange(w.shape[0])
    n = w.shape[1]
    i0 = np.maximum(idx - 1, 0)  # (the neighbours inside the row: np.clip costs more than the rest)
    i2 = np.minimum(idx + 1, n - 1)
    y0, y1, y2 = w[r, i0], w[r, idx], w[r, i2]
    d = y0 - 2.0 * y1 + y2
    inner = (idx > 0) & (idx < n - 1) & (d != 0.0)
    off = np.zeros(len(r))
    np.divide(0.5 * (y0 - y2), d, out=off, where=inner)
    off = np.where(np.abs(off) < 1.0, off, 0.0)
    val = y1 - 0.25 * (y0 - y2) * off
    return val, off, idx
