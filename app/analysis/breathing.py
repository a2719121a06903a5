"""Respiratory variation of the baseline EMG: the tube check's sign of vocal-fold contact.

Owns: ``BreathingMeter`` (stateful, pure: fed consecutive blocks of free-running EMG,
reduced to 100 ms frames kept in a bounded buffer), ``SideBreathing`` (the result for one
side) and ``BreathingResult`` (both sides), plus ``measuring_json`` / ``not_measured_json``
for the states before a result exists.
May import: numpy, scipy.signal, ``app.model``, ``app.settings``.

Pure: no threads, clocks or I/O; time comes from the blocks (``t0_s`` of each block, then
the sample count). Works at any stream rate of at least 100 Hz (the board may decimate).

What is measured. Electrodes on a tube that touches the vocal folds move with them at every
breath, and the folds' tonic activity follows the breathing cycle. Both show on the
free-running EMG of that side, and both fade when the tube is displaced or rotated:

- *wander*: the slow swing of the baseline at the breathing rate (electrode contact moving);
  reported as the peak-to-peak of the respiratory component of the baseline, in µV;
- *modulation*: the background EMG (its robust RMS) rising and falling with each breath;
  reported as the modulation depth ``m`` in % (envelope ``E (1 + m sin(2 pi f t))``).

Method, per channel:

1. 100 ms frames. The frame's *level* is the median of its raw samples: ECG spikes (a QRS
   is about 10 % of a frame), motor-unit potentials and a stimulus artifact barely move a
   median, and 50 Hz and 60 Hz hum have a whole number of periods in 100 ms, so their
   median is zero. The frame's *envelope* is taken in the EMG band: high-pass at
   ``emg.highpass_hz`` (4th-order Butterworth, state kept between blocks; removes the
   wander and the slow P and T waves of the ECG), then the frame minus the previous frame
   (subtracting the signal 100 ms earlier cancels 50 Hz and 60 Hz hum and all their
   harmonics exactly), then a robust RMS divided by sqrt(2): the RMS of the 90 % smallest
   deviations from the frame's median (which leaves out the remaining sharp QRS spikes),
   scaled to the standard deviation of Gaussian noise.
2. Stimuli: the samples of each stimulus window (``blank``: the engine passes the stimulus
   times) are left out of their frame and, through the comb, of the next one; frames are
   cut ``LAG_S`` after their samples arrived so that the stimulus epochs, which come after
   the stream, are known by then (a window told later leaves out the whole frames). A
   frame with less than 30 % of its samples left is invalid. Frames are also invalid when
   the signal reaches ``analysis.saturation_uV`` or the envelope reaches
   ``analysis.cautery_rms_uV`` (electrocautery; the frames on either side too), or when
   the stream had a gap. A side is *not measurable* when fewer than 80 % of the frames of
   the window are valid (reason: electrocautery, stimulation or signal interrupted), or
   when its envelope is flat (no signal: electrode off).
3. The breathing frequency is the one, between ``tube.breathing_low_hz`` and
   ``tube.breathing_high_hz``, at which a sinusoid (plus a straight line for electrode
   drift) explains most of the level and envelope series of both sides together
   (least squares on the valid frames' times, so gaps need no filling: a coarse grid at
   a quarter of the 1/window resolution, then a fine one around the best). One patient
   breathes at one rate; fitting both sides together keeps an absent side from picking
   the largest noise peak as its "breathing".
4. At that frequency: wander = 2 x the sinusoid's amplitude in the level series (for a
   sinusoidal swing, its peak-to-peak); modulation = the sinusoid's amplitude in the
   envelope series over the fitted mean envelope.
5. Present when the modulation reaches ``tube.breathing_min_modulation_pct`` and the wander
   reaches ``tube.breathing_min_wander_uV`` (a wander limit of 0 is not required: an
   amplifier whose high-pass removes the slow baseline swing). Absent otherwise.

Accuracy (synthetic signals, ``tests/analysis/test_analysis_breathing.py``): wander
within 10 % and modulation within 2.5 percentage points for sinusoidal breathing with
noise, ECG and hum at 20 kHz (the modulation's spread is about 0.3 percentage points SD
there; about 0.8 on a stream decimated to 2 kHz, where less of the EMG band is left);
a non-sinusoidal breathing shape is reported by its fundamental (smaller than its
peak-to-peak).

Not measured: the breathing pattern itself (inspiration vs expiration), changes of the
rate within the window (the fit assumes one rate), and anything about the side whose
electrodes are off.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import Any
from collections.abc import Sequence

import numpy as np
from scipy import signal as sps

from app.model import SIDES
from app.settings import Settings, load

FRAME_S = 0.1  # 100 ms: a whole number of 50 Hz and 60 Hz periods
MIN_COVERAGE = 0.8  # valid frames of the window needed for a verdict
LAG_S = 0.25  # frames are cut this long after their samples arrived (stimulus epochs come later)
_MIN_KEEP = 0.3  # a frame needs this fraction of its samples outside stimulus windows
_TRIM = 0.9  # the envelope is the RMS of the smallest 90 % of the deviations from the frame's median
_TRIM_RMS = 0.78928  # ... which is this fraction of the standard deviation of Gaussian noise
_FLAT_UV = 0.05  # envelope below this: no signal (electrode off, amplifier off)
_GAP_S = 0.1  # a jump in block times larger than this is a gap in the stream
_KEEP_MARGIN_S = 10.0  # frames kept beyond the window

_OK, _ARTIFACT, _STIM = 0, 1, 2

REASONS = {
    "cautery": "electrocautery",
    "stimulation": "stimulation",
    "interrupted": "signal interrupted",
    "no_signal": "no signal (electrode off?)",
    "no_stream": "no EMG stream",
    "interrupted_restart": "measurement interrupted",
}


@dataclass(frozen=True)
class SideBreathing:
    """The respiratory variation of one side's baseline EMG over one window."""

    side: str
    present: bool | None  # None: not measurable (see ``reason``)
    wander_uV: float | None = None  # peak-to-peak of the respiratory swing of the baseline
    modulation_pct: float | None = None  # respiratory modulation depth of the EMG background
    background_uV: float | None = None  # mean robust RMS of the EMG background
    rate_per_min: float | None = None  # breathing rate the fit found
    coverage_pct: float = 0.0  # valid frames of the window
    window_s: float = 0.0
    reason: str | None = None  # why not measurable

    @property
    def status(self) -> str:
        return "not_measurable" if self.present is None else "measured"

    def text(self) -> str:
        return side_text(self.to_json())

    def to_json(self) -> dict[str, Any]:
        def r(x: float | None, nd: int) -> float | None:
            return None if x is None else round(float(x), nd)

        return {
            "status": self.status,
            "present": self.present,
            "wander_uV": r(self.wander_uV, 1),
            "modulation_pct": r(self.modulation_pct, 1),
            "background_uV": r(self.background_uV, 2),
            "rate_per_min": r(self.rate_per_min, 1),
            "coverage_pct": r(self.coverage_pct, 0),
            "window_s": r(self.window_s, 1),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class BreathingResult:
    """The breathing variation of both sides over one window of the free-running EMG."""

    sides: dict[str, SideBreathing]
    t_from: float
    t_to: float
    rate_per_min: float | None  # the common breathing rate (None when no side is measurable)

    def to_json(self) -> dict[str, dict[str, Any]]:
        """``{"L": {...}, "R": {...}}`` (``SideBreathing.to_json`` per side)."""
        return {side: s.to_json() for side, s in self.sides.items()}


def measuring_json(sides: Sequence[str], remaining_s: float, window_s: float) -> dict[str, dict[str, Any]]:
    """The per-side entry while the window is still being recorded."""
    return {s: {"status": "measuring", "present": None, "remaining_s": round(max(float(remaining_s), 0.0), 1),
                "window_s": round(float(window_s), 1), "reason": None} for s in sides}


def not_measured_json(sides: Sequence[str], reason: str, window_s: float = 0.0) -> dict[str, dict[str, Any]]:
    """The per-side entry when no measurement could be made (``reason`` in words)."""
    return {s: SideBreathing(s, None, window_s=window_s, reason=reason).to_json() for s in sides}


def side_text(d: Any) -> str:
    """One side's entry (``SideBreathing.to_json``, a bare bool, or None) in words."""
    if d is None:
        return "not measured"
    if isinstance(d, bool):
        return "present" if d else "absent"
    if not isinstance(d, dict):
        return str(d)
    status = d.get("status")
    if status == "measuring":
        rem = d.get("remaining_s")
        return "measuring" + (f" ({rem:.0f} s)" if isinstance(rem, (int, float)) else "")
    present = d.get("present")
    if present is None:
        return "not measurable" + (f": {d['reason']}" if d.get("reason") else "")
    values = []
    if d.get("wander_uV") is not None:
        values.append(f"wander {d['wander_uV']:.0f} µV")
    if d.get("modulation_pct") is not None:
        values.append(f"modulation {d['modulation_pct']:.0f} %")
    return ("present" if present else "absent") + (f" ({', '.join(values)})" if values else "")


class BreathingMeter:
    """Respiratory variation of the baseline EMG in consecutive blocks (see the module docstring)."""

    def __init__(
        self,
        settings: Settings | None = None,
        sample_rate_hz: float = 20000.0,
        sides: Sequence[str] = SIDES,
        keep_s: float | None = None,
    ) -> None:
        s = settings if settings is not None else load()
        fs = float(sample_rate_hz)
        if not (np.isfinite(fs) and fs * FRAME_S >= 10):
            raise ValueError(f"sample rate must be at least {10 / FRAME_S:g} Hz for the breathing variation, "
                             f"got {sample_rate_hz!r}")
        if not sides:
            raise ValueError("at least one side is needed")
        self.fs = fs
        self.sides = tuple(sides)
        self.frame = int(round(FRAME_S * fs))
        self.frame_s = self.frame / fs
        self.window_s = float(s["tube.breathing_window_s"])
        self.low_hz = float(s["tube.breathing_low_hz"])
        self.high_hz = float(s["tube.breathing_high_hz"])
        self.min_modulation_pct = float(s["tube.breathing_min_modulation_pct"])
        self.min_wander_uV = float(s["tube.breathing_min_wander_uV"])
        self.saturation_uV = float(s["analysis.saturation_uV"])
        self.cautery_uV = float(s["analysis.cautery_rms_uV"])
        self.highpass_hz = min(float(s["emg.highpass_hz"]), 0.25 * fs)
        self._sos = sps.butter(4, self.highpass_hz, btype="highpass", fs=fs, output="sos")
        keep = self.window_s + _KEEP_MARGIN_S if keep_s is None else float(keep_s)
        self._frames: collections.deque[list[Any]] = collections.deque(
            maxlen=max(1, int(math.ceil(keep / self.frame_s))))
        self._blanks: collections.deque[tuple[float, float]] = collections.deque(maxlen=256)
        self._restart()

    # ------------------------------------------------------------------ state

    def _restart(self) -> None:
        nch = len(self.sides)
        self._carry = np.zeros((2 * nch, 0))  # samples not yet framed: raw rows, then high-passed rows
        self._zi: np.ndarray | None = None
        self._prev: np.ndarray | None = None  # the last frame, high-passed (for the 100 ms comb)
        self._prev_mask: np.ndarray | None = None  # its samples inside a stimulus window
        self._seg_t0: float | None = None  # time of the first sample of the current segment
        self._seg_n = 0  # samples received in the segment
        self._seg_frames = 0  # frames cut from the segment (the first is the comb's reference)
        self._after_artifact = False

    def reset(self) -> None:
        """Forget everything."""
        self._frames.clear()
        self._blanks.clear()
        self._restart()

    @property
    def covered_until(self) -> float | None:
        """End time of the newest frame (None before the first)."""
        if not self._frames:
            return None
        return float(self._frames[-1][0]) + self.frame_s / 2

    @property
    def first_frame_t(self) -> float | None:
        """Start time of the oldest frame kept."""
        if not self._frames:
            return None
        return float(self._frames[0][0]) - self.frame_s / 2

    # ------------------------------------------------------------------ feeding

    def blank(self, t_start: float, t_end: float) -> None:
        """``[t_start, t_end]`` holds a stimulus (its artifact and response): those samples are
        left out of the frames cut later; a frame already cut that it overlaps is left out whole."""
        a, b = float(t_start), float(t_end)
        if b < a:
            a, b = b, a
        self._blanks.append((a, b))
        half = self.frame_s / 2
        for fr in reversed(self._frames):
            if fr[0] + half <= a:  # this frame and those before it end before the window
                break
            if fr[0] - half <= b + self.frame_s:  # the frame holds it, or the one before it (its comb partner)
                fr[3] = np.maximum(fr[3], _STIM)

    def feed(self, block_uV: np.ndarray, t0_s: float) -> None:
        """Feed the next block, shape (sides, n) in µV; ``t0_s`` is its first sample. Frames are
        cut ``LAG_S`` after their samples arrived (the stimulus windows in them are known by then)."""
        x = np.asarray(block_uV, dtype=np.float64)
        if x.ndim == 1 and len(self.sides) == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[0] != len(self.sides):
            raise ValueError(f"expected a block of shape ({len(self.sides)}, n) for sides "
                             f"{', '.join(self.sides)}, got {x.shape}")
        if x.shape[1] == 0:
            return
        if not np.isfinite(x).all():
            x = np.nan_to_num(x, nan=0.0, posinf=self.saturation_uV, neginf=-self.saturation_uV)
        t0 = float(t0_s)
        if self._seg_t0 is not None and abs(t0 - (self._seg_t0 + self._seg_n / self.fs)) > _GAP_S:
            self.flush()
            self._restart()
        if self._seg_t0 is None:
            self._seg_t0 = t0
        self._seg_n += x.shape[1]
        if self._zi is None:
            self._zi = sps.sosfilt_zi(self._sos)[:, None, :] * x[None, :, 0:1]
        y, self._zi = sps.sosfilt(self._sos, x, axis=1, zi=self._zi)
        xy = np.concatenate([x, y], axis=0)
        self._carry = np.concatenate([self._carry, xy], axis=1) if self._carry.shape[1] else xy
        self._cut(self._seg_t0 + self._seg_n / self.fs - LAG_S)

    def flush(self) -> None:
        """Cut every whole frame received (the end of the stream: no more stimuli to wait for)."""
        self._cut(math.inf)

    def _cut(self, until: float) -> None:
        nch = len(self.sides)
        n = self.frame
        while self._carry.shape[1] >= n and self._seg_t0 is not None:
            t_start = self._seg_t0 + self._seg_frames * self.frame_s
            if t_start + self.frame_s > until:
                break
            fr, self._carry = self._carry[:, :n], self._carry[:, n:]
            self._frame(fr[:nch], fr[nch:], t_start)

    def _mask(self, t_start: float) -> np.ndarray:
        """Samples of the frame starting at ``t_start`` inside a stimulus window."""
        mask = np.zeros(self.frame, dtype=bool)
        t_end = t_start + self.frame_s
        while self._blanks and self._blanks[0][1] < t_start - 2 * self.frame_s:
            self._blanks.popleft()
        for a, b in self._blanks:
            if b >= t_start and a < t_end:
                i0 = max(0, int(math.floor((a - t_start) * self.fs)))
                i1 = min(self.frame, int(math.ceil((b - t_start) * self.fs)) + 1)
                mask[i0:i1] = True
        return mask

    def _frame(self, raw: np.ndarray, band: np.ndarray, t_start: float) -> None:
        """One frame of raw samples and of the same samples high-passed, shape (sides, frame)."""
        k = self._seg_frames
        self._seg_frames += 1
        t = t_start + self.frame_s / 2
        mask = self._mask(t_start)
        prev, prev_mask = self._prev, self._prev_mask
        self._prev, self._prev_mask = band, mask
        if prev is None or prev_mask is None or k == 0:
            return  # no frame 100 ms before it: only the comb's reference
        nch = len(self.sides)
        flag = np.zeros(nch, dtype=np.int8)
        keep = ~mask
        keep_env = keep & ~prev_mask
        if int(keep_env.sum()) < _MIN_KEEP * self.frame:
            level = np.full(nch, np.nan)
            env = np.full(nch, np.nan)
            flag[:] = _STIM
            artifact = False
        else:
            r = raw[:, keep]
            level = np.median(r, axis=1)
            d = band[:, keep_env] - prev[:, keep_env]
            a = np.abs(d - np.median(d, axis=1, keepdims=True))
            m = max(1, int(_TRIM * a.shape[1]))
            a = np.partition(a, m - 1, axis=1)[:, :m]  # the smallest 90 %: sharp QRS spikes left out
            env = np.sqrt(np.mean(a * a, axis=1)) / (_TRIM_RMS * math.sqrt(2.0))
            artifact = bool((np.abs(r) >= self.saturation_uV).any() or (env >= self.cautery_uV).any())
        if artifact or self._after_artifact:  # cautery: both sides, and the frames on either side
            flag[:] = np.maximum(flag, _ARTIFACT)
            if artifact and self._frames and self._frames[-1][0] > t - 1.5 * self.frame_s:
                self._frames[-1][3] = np.maximum(self._frames[-1][3], _ARTIFACT)
        self._after_artifact = artifact
        self._frames.append([t, level, env, flag])

    # ------------------------------------------------------------------ evaluation

    def ready(self, t_from: float) -> bool:
        """A whole window from ``t_from`` has been framed."""
        end = self.covered_until
        return end is not None and end >= t_from + self.window_s + self.frame_s / 2

    def evaluate(self, t_from: float | None = None, t_to: float | None = None) -> BreathingResult:
        """The breathing variation over ``[t_from, t_to)`` (default: the newest window)."""
        if t_to is None:
            covered = self.covered_until
            t_to = covered if covered is not None else 0.0
        if t_from is None:
            t_from = t_to - self.window_s
        t_from, t_to = float(t_from), float(t_to)
        span = max(t_to - t_from, 0.0)
        sel = [fr for fr in self._frames if t_from <= fr[0] < t_to]
        expected = max(int(round(span / self.frame_s)), 1)
        if not sel:
            return BreathingResult({s: SideBreathing(s, None, window_s=span, reason=REASONS["no_stream"])
                                    for s in self.sides}, t_from, t_to, None)
        t = np.array([fr[0] for fr in sel])
        level = np.stack([fr[1] for fr in sel], axis=1)  # (sides, frames)
        env = np.stack([fr[2] for fr in sel], axis=1)
        flag = np.stack([fr[3] for fr in sel], axis=1)
        series: list[tuple[int, str, np.ndarray, np.ndarray]] = []  # (channel, kind, times, values)
        verdicts: dict[int, SideBreathing] = {}
        for ch, side in enumerate(self.sides):
            ok = (flag[ch] == _OK) & np.isfinite(env[ch])
            n_ok = int(ok.sum())
            coverage = 100.0 * min(n_ok / expected, 1.0)
            if n_ok < MIN_COVERAGE * expected:
                n_art = int((flag[ch] == _ARTIFACT).sum())
                n_stim = int((flag[ch] == _STIM).sum())
                n_missing = expected - len(sel)
                worst = max((n_art, "cautery"), (n_stim, "stimulation"), (n_missing, "interrupted"))
                verdicts[ch] = SideBreathing(side, None, coverage_pct=coverage, window_s=span,
                                             reason=REASONS[worst[1]])
                continue
            if float(np.median(env[ch][ok])) < _FLAT_UV:
                verdicts[ch] = SideBreathing(side, None, coverage_pct=coverage, window_s=span,
                                             reason=REASONS["no_signal"])
                continue
            series.append((ch, "level", t[ok], level[ch][ok]))
            series.append((ch, "env", t[ok], env[ch][ok]))
        if not series:
            return BreathingResult({s: verdicts[ch] for ch, s in enumerate(self.sides)}, t_from, t_to, None)
        f = _common_frequency([(ts, v) for _, _, ts, v in series], self.low_hz, self.high_hz, span)
        fits = {(ch, kind): _fit(ts, v, f) for ch, kind, ts, v in series}
        for ch, side in enumerate(self.sides):
            if ch in verdicts:
                continue
            amp_level, _ = fits[(ch, "level")]
            amp_env, mean_env = fits[(ch, "env")]
            wander = 2.0 * amp_level
            # the comb mixes each frame with the one before it: at the breathing rate the
            # envelope's swing is cos(pi f T) smaller (T = 100 ms; 2.4 % at 0.7 Hz)
            comb = math.cos(math.pi * f * self.frame_s)
            modulation = 100.0 * amp_env / (mean_env * comb) if mean_env > 0 else 0.0
            present = modulation >= self.min_modulation_pct and (
                self.min_wander_uV <= 0 or wander >= self.min_wander_uV)
            ok = (flag[ch] == _OK) & np.isfinite(env[ch])
            verdicts[ch] = SideBreathing(side, bool(present), wander, modulation, mean_env, 60.0 * f,
                                         100.0 * min(int(ok.sum()) / expected, 1.0), span)
        return BreathingResult({s: verdicts[ch] for ch, s in enumerate(self.sides)}, t_from, t_to, 60.0 * f)


# ---------------------------------------------------------------------- least squares


def _design(t: np.ndarray, f: float) -> np.ndarray:
    w = 2.0 * math.pi * f * t
    return np.column_stack([np.ones_like(t), t, np.sin(w), np.cos(w)])


def _explained(t: np.ndarray, y: np.ndarray, f: float, base_rss: float) -> float:
    """Fraction of the variance left by a straight line that a sinusoid at ``f`` explains."""
    coef, *_ = np.linalg.lstsq(_design(t, f), y, rcond=None)
    resid = y - _design(t, f) @ coef
    if base_rss <= 0:
        return 0.0
    return max(0.0, 1.0 - float(resid @ resid) / base_rss)


def _common_frequency(series: list[tuple[np.ndarray, np.ndarray]], low: float, high: float, span: float) -> float:
    """The frequency in ``[low, high]`` at which sinusoids explain most of all the series."""
    prepared = []
    for ts, y in series:
        tc = ts - ts.mean()
        line = np.column_stack([np.ones_like(tc), tc])
        coef, *_ = np.linalg.lstsq(line, y, rcond=None)
        r = y - line @ coef
        prepared.append((tc, y, float(r @ r)))

    def score(f: float) -> float:
        return sum(_explained(tc, y, f, rss) for tc, y, rss in prepared)

    step = 1.0 / (4.0 * max(span, 1.0))
    grid = np.arange(low, high + step / 2, step)
    scores = [score(float(f)) for f in grid]
    best = float(grid[int(np.argmax(scores))])
    fine = np.linspace(max(low, best - step), min(high, best + step), 21)
    fine_scores = [score(float(f)) for f in fine]
    return float(fine[int(np.argmax(fine_scores))])


def _fit(ts: np.ndarray, y: np.ndarray, f: float) -> tuple[float, float]:
    """(amplitude of the sinusoid at ``f``, mean level at the window's centre)."""
    tc = ts - ts.mean()
    coef, *_ = np.linalg.lstsq(_design(tc, f), y, rcond=None)
    return float(math.hypot(coef[2], coef[3])), float(coef[0])
