"""Free-running EMG: spontaneous activity (nerve irritation) and electrocautery.

Owns: ``FreeRunDetector`` (stateful, pure: fed consecutive blocks, returns events),
``EmgEvent`` and ``EmgEventKind``.
May import: numpy, scipy.signal, ``app.analysis.kernel``, ``app.analysis.noise`` (``median_rows``),
``app.model``, ``app.settings``, ``firmware_bridge.messages``.

Pure: no threads, clocks or I/O; time comes from the blocks (``t0_s`` of the first block,
then the sample count). Works at any stream rate (the board may decimate the stream).

Evoked responses are not spontaneous activity. ``note_stimulus(t_s)`` tells the detector a
stimulus was delivered at ``t_s`` (the blocks' time base): the stimulus window, from 1 ms
before it to the end of the response window (``analysis.window_ms``), is replaced by a
straight line between the samples at its edges before anything is analysed, so neither the
artifact nor the response reaches the band-pass filter. A stimulus is known only once its
epoch has arrived, after the response window; ``stimulus_wait_s`` holds the newest samples
back that long (frames are analysed once that much newer signal has arrived), and a window
whose far edge has not arrived yet holds back the analysis at its start. A stimulus noted
after part of its window was analysed has only the rest of it blanked: by the straight line
from the last sample analysed to the far edge, so the signal has no step where they meet.

Method, per channel, in 10 ms frames (the per-frame statistics of a block are computed for
the whole block at once; only the frame-to-frame state is stepped frame by frame). What
cannot change a result is not computed: a block whose band-passed signal stays below
``analysis.cautery_rms_uV`` has no frame at cautery level, one that stays below
``emg.spike_threshold_uV`` has no peak, and the noise floor (history of robust RMS) is
worked out only for frames with a sample at the threshold (or when asked for); the
results are the same as computing everything:

- Causal band-pass (Butterworth, SOS, state kept between blocks):
  ``emg.highpass_hz`` (4th order; removes breathing wander, ECG and most of the mains hum)
  to ``emg.lowpass_hz`` (capped at 45 % of the sample rate).
- Noise floor: the median over the last 0.5 s of each frame's robust RMS (median absolute
  value), so sparse potentials do not raise it but continuous noise does.
- Motor-unit potentials: peaks of the band-passed signal reaching both
  ``emg.spike_threshold_uV`` and ``emg.spike_snr`` x the noise floor; peaks closer than
  4 ms are one potential (its phases), and a peak within 10 ms of a potential and under
  30 % of it is that potential's tail. A potential both channels see alike (correlation
  >= 0.8 over +-2 ms, the other channel's deflection at least a third as large) is
  common-mode (ECG, movement) and dropped.
- Episodes: potentials less than ``emg.max_gap_ms`` apart form a chain; a chain of at least
  ``emg.min_potentials`` is an episode of spontaneous activity (a small stray potential at
  either end, more than six median intervals away, is not part of it). ECG spikes that survive the
  filter come once per heartbeat (far more than the gap apart) and never chain by
  themselves. An episode
  is a *train* when its interval variation (SD/mean) is at most ``emg.train_cv`` (regular
  firing), else a *burst*. Reported when recognised (``activity_start``) and when over
  (``activity``: onset = first potential, duration to the last, peak amplitude, count, rate).
- Electrocautery: a frame whose band-passed RMS on either channel reaches
  ``analysis.cautery_rms_uV`` (or whose raw signal is out of range while cautery goes on).
  ``cautery_start`` comes at the first such frame (mute the EMG audio), ``cautery_end``
  after ``emg.cautery_hold_ms`` without one. Potentials during cautery are ignored and an
  open episode is closed at its last potential, so cautery is never called irritation.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Sequence

import numpy as np
from scipy import signal as sps

from app.analysis.kernel import SOSFILT as _SOSFILT
from app.analysis.noise import median_rows
from app.model import CHANNEL_LABELS
from app.settings import Settings, load

_FRAME_MS = 10.0
_FLOOR_FRAMES = 50  # noise floor: median of the last 0.5 s of frames
_REFRACTORY_MS = 4.0  # peaks closer than this are one potential (its phases, filter ringing)
_SHADOW_MS = 10.0  # after a potential, smaller peaks within this are its tail or ringing
_SHADOW_FRACTION = 0.3  # ... when below this fraction of it
_COMMON_MS = 2.0  # window (each side) compared between the channels around a potential
_COMMON_CORR = 0.8  # correlation at or above which the channels see the same thing
_COMMON_RATIO = 3.0  # ... when the other channel's deflection is at least 1/3 as large
_MAD_TO_SIGMA = 1.4826
_EDGE_FACTOR = 6.0  # a first/last potential this many median intervals away is a stray
_EDGE_MIN_S = 0.1
_EDGE_SIZE = 0.5
_GAP_RESET_S = 0.1  # a jump in the block times larger than this restarts the detector
_STIM_PRE_S = 0.001  # a stimulus window starts this long before the stimulus
_STIM_PENDING_MAX = 256  # noted stimuli kept waiting for their windows (the newest)
# A block whose band-passed samples all stay below this fraction of the cautery level has
# no frame at it: a frame's RMS, as computed, exceeds its largest sample by rounding only
# (relative 1e-13 at most), far less than this margin.
_CALM_MARGIN = 1.0 - 1e-9



class EmgEventKind(str, enum.Enum):  # noqa: UP042 - str mix-in as in app.model
    """What the free-running EMG analysis reports."""

    ACTIVITY_START = "activity_start"  # an episode has been recognised (still going)
    ACTIVITY = "activity"  # an episode is over: onset, duration, peak, pattern
    CAUTERY_START = "cautery_start"
    CAUTERY_END = "cautery_end"


@dataclass(frozen=True)
class EmgEvent:
    """One report of the free-running EMG analysis: an episode of activity or cautery."""

    kind: EmgEventKind
    t_s: float  # when it was recognised (end of the frame that completed it)
    channel: str | None  # "EMG L" / "EMG R"; None for cautery (both channels)
    onset_s: float
    duration_s: float | None = None
    peak_uV: float | None = None  # largest potential (band-passed peak)
    pattern: str | None = None  # "burst" or "train"
    potentials: int = 0
    rate_hz: float | None = None

    def to_json(self) -> dict[str, Any]:
        def r(x: float | None, nd: int) -> float | None:
            return None if x is None else round(float(x), nd)

        return {
            "kind": self.kind.value,
            "t_s": r(self.t_s, 4),
            "channel": self.channel,
            "onset_s": r(self.onset_s, 4),
            "duration_s": r(self.duration_s, 4),
            "peak_uV": r(self.peak_uV, 1),
            "pattern": self.pattern,
            "potentials": self.potentials,
            "rate_hz": r(self.rate_hz, 2),
        }


@dataclass
class _Chain:
    times: list[float] = field(default_factory=list)
    peaks: list[float] = field(default_factory=list)
    announced: bool = False


class FreeRunDetector:
    """Spontaneous activity and cautery in consecutive blocks of free-running EMG."""

    def __init__(
        self,
        settings: Settings | None = None,
        sample_rate_hz: float = 20000.0,
        channels: Sequence[str] = CHANNEL_LABELS,
        stimulus_wait_s: float = 0.0,
    ) -> None:
        s = settings if settings is not None else load()
        fs = float(sample_rate_hz)
        if not (fs > 0 and np.isfinite(fs)):
            raise ValueError(f"sample rate must be a positive number of Hz, got {sample_rate_hz!r}")
        wait = float(stimulus_wait_s)
        if not (wait >= 0 and np.isfinite(wait)):
            raise ValueError(f"stimulus_wait_s must be a number of seconds >= 0, got {stimulus_wait_s!r}")
        if not channels:
            raise ValueError("at least one channel is needed")
        self.fs = fs
        self.channels = tuple(channels)
        self.threshold_uV = float(s["emg.spike_threshold_uV"])
        self.snr = float(s["emg.spike_snr"])
        self.max_gap_s = float(s["emg.max_gap_ms"]) / 1000.0
        self.min_potentials = int(s["emg.min_potentials"])
        self.train_cv = float(s["emg.train_cv"])
        self.cautery_uV = float(s["analysis.cautery_rms_uV"])
        self._calm_uV = self.cautery_uV * _CALM_MARGIN
        self.saturation_uV = float(s["analysis.saturation_uV"])
        self.cautery_hold_s = float(s["emg.cautery_hold_ms"]) / 1000.0
        self.stimulus_window_s = float(s["analysis.window_ms"]) / 1000.0
        self.wait = int(np.ceil(wait * fs))  # samples held back for late stimulus notes
        high = min(float(s["emg.lowpass_hz"]), 0.45 * fs)
        low = min(float(s["emg.highpass_hz"]), 0.5 * high)
        self._sos = np.vstack(
            [
                sps.butter(4, low, btype="highpass", fs=fs, output="sos"),
                sps.butter(2, high, btype="lowpass", fs=fs, output="sos"),
            ]
        )
        self.frame = max(8, int(round(_FRAME_MS * fs / 1000.0)))
        self.refractory = max(1, int(round(_REFRACTORY_MS * fs / 1000.0)))
        self.reset()

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Forget everything (a new stream, or a gap in it)."""
        nch = len(self.channels)
        self._zi = np.zeros((nch, self._sos.shape[0], 2))  # filter state per channel, section
        self._primed = False
        self._buf = np.zeros((nch, 0))
        self._t0: float | None = None  # time of sample 0
        self._consumed = 0  # samples processed into frames
        self._received = 0  # samples received
        # robust RMS of the last _FLOOR_FRAMES ordinary frames (channels, frames), oldest first:
        # those worked out, then the band-passed frames (channels, frames, samples) not yet
        # reduced to it (see _history)
        self._floors = np.zeros((nch, 0))
        self._unreduced: list[np.ndarray] = []
        self._unreduced_n = 0
        self._chains = [_Chain() for _ in self.channels]
        self._last_spike = [(-1e9, 0.0) for _ in self.channels]  # (time, |peak|) for refractory merging
        self._cautery_since: float | None = None
        self._cautery_last: float | None = None
        self._stimuli: list[float] = []  # noted stimuli (detector time) whose window is not yet blanked
        self._last_raw: np.ndarray | None = None  # the last sample analysed (left edge of a late window)
        self._delta = 0.0  # block time - detector time of the newest block (clock jitter below a gap)

    @property
    def cautery_active(self) -> bool:
        return self._cautery_since is not None

    @property
    def active_channels(self) -> list[str]:
        """Channels with an episode in progress (recognised, not yet over)."""
        return [c for c, ch in zip(self.channels, self._chains, strict=True) if ch.announced]

    def noise_uV(self) -> dict[str, float | None]:
        """Current noise floor per channel (band-passed RMS)."""
        floors = self._history()
        if not floors.shape[1]:
            return {c: None for c in self.channels}
        return {c: float(m) for c, m in zip(self.channels, median_rows(floors), strict=True)}

    # ------------------------------------------------------------------ feeding

    def note_stimulus(self, t_s: float) -> None:
        """A stimulus was delivered at ``t_s`` (same time base as the blocks): its window is
        not free-running EMG (see the module docstring). Note it before the wait is over;
        at most the newest 256 notes wait for their windows to arrive."""
        t = float(t_s)
        if not np.isfinite(t):
            raise ValueError(f"stimulus time must be a finite number of seconds, got {t_s!r}")
        self._stimuli.append(t - self._delta)
        if len(self._stimuli) > _STIM_PENDING_MAX:
            del self._stimuli[0]

    def feed(self, block_uV: np.ndarray, t0_s: float) -> list[EmgEvent]:
        """Feed the next block, shape (channels, n) in µV; ``t0_s`` is its first sample."""
        x = np.asarray(block_uV, dtype=np.float64)
        if x.ndim == 1 and len(self.channels) == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[0] != len(self.channels):
            raise ValueError(
                f"expected a block of shape ({len(self.channels)}, n) for {', '.join(self.channels)}, got {x.shape}"
            )
        events: list[EmgEvent] = []
        if x.shape[1] == 0:
            return events
        if not np.isfinite(x).all():
            x = np.nan_to_num(x, nan=0.0, posinf=self.saturation_uV, neginf=-self.saturation_uV)
        if self._t0 is None:
            self._t0 = float(t0_s)
        else:
            expected = self._t0 + self._received / self.fs
            if abs(float(t0_s) - expected) > _GAP_RESET_S:
                stimuli = [t + self._delta for t in self._stimuli]  # noted for the new stream?
                events += self.flush()
                self.reset()
                self._t0 = float(t0_s)
                self._stimuli = [t for t in stimuli if t >= self._t0 - self.stimulus_window_s]
            else:
                self._delta = float(t0_s) - expected
        self._received += x.shape[1]
        # (a copy either way: samples held back must not change with a block buffer the caller reuses)
        self._buf = np.concatenate([self._buf, x], axis=1) if self._buf.shape[1] else x.copy()
        events += self._analyse(final=False)
        return events

    def _analyse(self, final: bool) -> list[EmgEvent]:
        """Blank the stimulus windows that can be blanked, then analyse the whole frames
        that may be analysed (all of them at the end of the stream)."""
        limit = self._received if final else self._received - self.wait
        if self._stimuli:
            limit = min(limit, self._blank(final))
        nframes = max(0, limit - self._consumed) // self.frame
        if nframes == 0:
            return []
        take = nframes * self.frame
        chunk, self._buf = self._buf[:, :take], self._buf[:, take:]
        self._last_raw = chunk[:, -1].copy()
        if not self._primed:
            self._zi = chunk[:, 0:1, None] * sps.sosfilt_zi(self._sos)[None, :, :]
            self._primed = True
        if _SOSFILT is not None:
            y = chunk.copy()  # C-ordered, filtered in place, as sosfilt does
            _SOSFILT(self._sos, y, self._zi)
        else:  # pragma: no cover - a scipy without the kernel
            y, zf = sps.sosfilt(self._sos, chunk, axis=1, zi=self._zi.transpose(1, 0, 2))
            self._zi = np.ascontiguousarray(zf.transpose(1, 0, 2))
        return self._frames(y, chunk, nframes)

    def _blank(self, final: bool) -> int:
        """Replace the noted stimulus windows whose far edge has arrived by straight lines;
        returns the sample the analysis must stop at (the start of a window still waiting
        for its far edge; at the end of the stream such a window is blanked to the end)."""
        t0, fs, start, end = self._t0, self.fs, self._consumed, self._received
        if t0 is None:
            return end
        stop = end
        waiting: list[float] = []
        buf: np.ndarray | None = None
        for t in self._stimuli:
            i0 = int(np.floor((t - _STIM_PRE_S - t0) * fs))
            i1 = int(np.ceil((t + self.stimulus_window_s - t0) * fs))
            if i1 <= start or i1 <= i0:
                continue  # already analysed
            if i1 >= end and not final:
                waiting.append(t)
                stop = min(stop, max(i0, start))
                continue
            if i0 >= end:
                continue  # (end of the stream) nothing of it arrived
            if buf is None:
                buf = self._buf.copy()  # never change the caller's samples
            anchor = i0 - 1  # the sample the line starts from
            if i0 - 1 >= start:
                left = buf[:, i0 - 1 - start]
            elif self._last_raw is not None:
                left, anchor = self._last_raw, start - 1  # noted late: from the last sample analysed
            else:
                left = buf[:, i1 - start] if i1 < end else np.zeros(buf.shape[0])
            right = buf[:, i1 - start] if i1 < end else left
            w = np.linspace(0.0, 1.0, i1 - anchor + 1)[1:-1]
            lo, hi = max(i0, start), min(i1, end)
            w = w[lo - anchor - 1: hi - anchor - 1]
            buf[:, lo - start: hi - start] = left[:, None] + (right - left)[:, None] * w[None, :]
        if buf is not None:
            self._buf = buf
        self._stimuli = waiting
        return stop

    def flush(self) -> list[EmgEvent]:
        """End of the stream: analyse what was held back, close whatever is open; returns
        the events."""
        if self._t0 is None:
            return []
        events = self._analyse(final=True)
        now = self._t0 + self._consumed / self.fs
        for ch in range(len(self.channels)):
            events += self._close(ch, now)
        if self._cautery_since is not None:
            events.append(self._cautery_end(now))
        return events

    # ------------------------------------------------------------------ internals

    def _frames(self, y: np.ndarray, raw: np.ndarray, nframes: int) -> list[EmgEvent]:
        """Whole frames of a block: the per-frame statistics of the block at once (numpy),
        then the frames in order (cautery state, thresholds, potentials, chains)."""
        events: list[EmgEvent] = []
        nch, size = y.shape[0], self.frame
        yf = y.reshape(nch, nframes, size)
        top, bottom = float(y.max()), float(y.min())
        if top < self._calm_uV and -bottom < self._calm_uV:
            hot = [False] * nframes  # no frame's RMS can reach the cautery level
        else:
            rms = np.sqrt(np.mean(yf * yf, axis=2))
            hot = (rms >= self.cautery_uV).any(axis=0).tolist()  # cautery level on either channel
        quiet = top < self.threshold_uV and -bottom < self.threshold_uV  # no peak anywhere
        sat: list[bool] | None = None  # raw signal out of range, looked at while cautery goes on
        base, fs = self._consumed, self.fs
        t0 = self._t0 if self._t0 is not None else 0.0  # set by the first block, before any frame
        f = 0
        while f < nframes:
            t_start = t0 + (base + f * size) / fs
            t_end = t0 + (base + (f + 1) * size) / fs
            if not hot[f] and self._cautery_since is not None and sat is None:
                sat = (np.abs(raw.reshape(nch, nframes, size)) >= self.saturation_uV).any(axis=(0, 2)).tolist()
            if hot[f] or (self._cautery_since is not None and sat is not None and sat[f]):
                if self._cautery_since is None:
                    self._cautery_since = t_start
                    for ch in range(nch):
                        events += self._close(ch, t_end)
                    events.append(EmgEvent(EmgEventKind.CAUTERY_START, t_end, None, t_start))
                self._cautery_last = t_end
                f += 1
                continue
            if self._cautery_since is not None and self._cautery_last is not None:
                if t_end - self._cautery_last >= self.cautery_hold_s:
                    events.append(self._cautery_end(t_end))
                else:
                    f += 1  # still inside the hold time: no activity counted
                    continue
            # a run of ordinary frames: up to the next frame at cautery level
            stop = f + 1
            while stop < nframes and not hot[stop]:
                stop += 1
            events += self._run(yf, f, stop, quiet)
            f = stop
        self._consumed = base + nframes * size
        return events

    def _run(self, yf: np.ndarray, f: int, stop: int, quiet: bool) -> list[EmgEvent]:
        """Frames ``f`` to ``stop`` of a block (``yf``: band-passed, shape (channels, frames,
        samples)), all ordinary: potentials and chains. ``quiet``: no sample of the block
        reaches ``emg.spike_threshold_uV``, the lowest threshold there is."""
        events: list[EmgEvent] = []
        nch, size = yf.shape[0], self.frame
        seg = yf[:, f:stop]
        n = stop - f
        over_at: dict[int, tuple[list[bool], list[float]]] = {}  # frame (in the run) -> over, thresholds
        a: np.ndarray | None = None
        if quiet:
            self._remember(seg)
        else:
            a = np.abs(seg)
            amax = a.max(axis=2)
            # a channel under emg.spike_threshold_uV is under its threshold whatever the floor
            reach = np.flatnonzero((amax >= self.threshold_uV).any(axis=0))
            if not len(reach):
                self._remember(seg)
            else:
                thr = np.maximum(self.threshold_uV, self.snr * self._floors_at(a, reach))
                over = amax[:, reach] >= thr
                for j, k in enumerate(reach.tolist()):
                    if over[:, j].any():
                        over_at[k] = (over[:, j].tolist(), thr[:, j].tolist())
        chains = self._chains
        if not over_at and not any(chain.times for chain in chains):
            return events  # no potential, no chain to close
        base, fs = self._consumed, self.fs
        t0 = self._t0 if self._t0 is not None else 0.0
        for k in range(n):
            i_frame = f + k
            t_end = t0 + (base + (i_frame + 1) * size) / fs
            hit = over_at.get(k)
            if hit is not None and a is not None:
                found = self._frame_peaks(a[:, k], seg[:, k], hit[0], hit[1])
                start = base + i_frame * size
                for ch in range(nch):
                    for i, peak in found[ch]:
                        events += self._spike(ch, t0 + (start + i) / fs, peak, t_end)
                    chain = chains[ch]
                    if chain.times and t_end - chain.times[-1] > self.max_gap_s:
                        events += self._close(ch, t_end)
            else:
                for ch in range(nch):
                    chain = chains[ch]
                    if chain.times and t_end - chain.times[-1] > self.max_gap_s:
                        events += self._close(ch, t_end)
        return events

    def _frame_peaks(self, a: np.ndarray, y: np.ndarray, over: list[bool],
                     thr: list[float]) -> list[list[tuple[int, float]]]:
        """Peaks of one frame per channel (``a`` = ``|y|``, shape (channels, samples)), looked
        for only on channels over their threshold; a common-mode pair across both is dropped."""
        found = [self._peaks(a[ch], a[ch] >= thr[ch]) if over[ch] else [] for ch in range(len(over))]
        if len(found) == 2 and (found[0] or found[1]):
            found = self._drop_common_mode(y, found)
        return found

    def _remember(self, seg: np.ndarray) -> None:
        """Ordinary frames (band-passed, shape (channels, frames, samples)) whose robust RMS
        joins the noise floor history; reduced to it only when needed (``_history``)."""
        self._unreduced.append(seg)
        self._unreduced_n += seg.shape[1]
        while self._unreduced_n - self._unreduced[0].shape[1] >= _FLOOR_FRAMES:
            self._unreduced_n -= self._unreduced.pop(0).shape[1]
        if self._unreduced_n >= _FLOOR_FRAMES:
            self._floors = self._floors[:, :0]  # all older than the newest _FLOOR_FRAMES

    def _history(self) -> np.ndarray:
        """The robust RMS of the last ``_FLOOR_FRAMES`` ordinary frames, shape (channels,
        frames), oldest first (the frames remembered so far reduced to it)."""
        if self._unreduced:
            need = _FLOOR_FRAMES
            parts: list[np.ndarray] = []
            for seg in reversed(self._unreduced):
                part = seg[:, -need:] if seg.shape[1] > need else seg
                parts.append(_MAD_TO_SIGMA * median_rows(np.abs(part)))
                need -= part.shape[1]
                if need <= 0:
                    break
            if need > 0 and self._floors.shape[1]:
                parts.append(self._floors)
            parts.reverse()
            ext = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
            self._floors = ext[:, -_FLOOR_FRAMES:].copy()
            self._unreduced = []
            self._unreduced_n = 0
        return self._floors

    def _floors_at(self, a: np.ndarray, frames: np.ndarray) -> np.ndarray:
        """Noise floors at some of a run of ordinary frames (``a``: absolute band-passed
        values, shape (channels, frames, samples); ``frames``: indices in the run, ascending),
        shape (channels, len(frames)): for each, the median of the robust RMS of the last
        ``_FLOOR_FRAMES`` ordinary frames (itself included). The run joins the history."""
        hist = self._history()
        sigma = _MAD_TO_SIGMA * median_rows(a)
        nch, h = hist.shape
        ext = np.concatenate([hist, sigma], axis=1) if h else sigma
        out = np.empty((nch, len(frames)))
        ends = frames + (h + 1)  # window of frame k: ext[:, end - _FLOOR_FRAMES: end]
        full = ends >= _FLOOR_FRAMES
        for j in np.flatnonzero(~full).tolist():  # window not yet full (start of the stream)
            out[:, j] = median_rows(ext[:, : int(ends[j])])
        if full.any():
            windows = np.lib.stride_tricks.sliding_window_view(ext, _FLOOR_FRAMES, axis=1)
            out[:, full] = median_rows(windows[:, ends[full] - _FLOOR_FRAMES])
        self._floors = ext[:, -_FLOOR_FRAMES:].copy()
        return out

    def _peaks(self, a: np.ndarray, above: np.ndarray) -> list[tuple[int, float]]:
        """(index, |peak|) of each run of supra-threshold samples, merged within refractory."""
        padded = np.concatenate(([False], above, [False]))
        edges = np.flatnonzero(padded[1:] != padded[:-1])
        out: list[tuple[int, float]] = []
        for s0, s1 in zip(edges[::2], edges[1::2], strict=True):
            i = s0 + int(np.argmax(a[s0:s1]))
            if out and i - out[-1][0] <= self.refractory:
                if a[i] > out[-1][1]:
                    out[-1] = (i, float(a[i]))
                continue
            out.append((i, float(a[i])))
        return out

    def _drop_common_mode(self, y: np.ndarray, found: list[list[tuple[int, float]]]) -> list[list[tuple[int, float]]]:
        """Drop potentials both channels see alike (ECG, movement): high correlation of the
        two channels around the peak and a comparable size on the other channel."""
        win = max(2, int(round(_COMMON_MS * self.fs / 1000.0)))
        n = y.shape[1]
        out: list[list[tuple[int, float]]] = []
        for ch, peaks in enumerate(found):
            other = y[1 - ch]
            kept = []
            for i, peak in peaks:
                a, b = max(0, i - win), min(n, i + win + 1)
                u, v = y[ch, a:b], other[a:b]
                common = False
                if b - a >= 4 and np.max(np.abs(v)) * _COMMON_RATIO >= peak:
                    du, dv = u - u.mean(), v - v.mean()
                    den = float(np.sqrt(np.dot(du, du) * np.dot(dv, dv)))
                    common = den > 0 and abs(float(np.dot(du, dv))) / den >= _COMMON_CORR
                if not common:
                    kept.append((i, peak))
            out.append(kept)
        return out

    def _spike(self, ch: int, t: float, peak: float, now: float) -> list[EmgEvent]:
        last_t, last_peak = self._last_spike[ch]
        chain = self._chains[ch]
        if t - last_t <= self.refractory / self.fs:  # the same potential across a frame edge
            if peak > last_peak and chain.times and chain.times[-1] == last_t:
                chain.peaks[-1] = peak
                self._last_spike[ch] = (last_t, peak)
            return []
        if t - last_t <= _SHADOW_MS / 1000.0 and peak < _SHADOW_FRACTION * last_peak:
            return []  # the tail (late phase, filter ringing) of the last potential
        self._last_spike[ch] = (t, peak)
        events: list[EmgEvent] = []
        if chain.times and t - chain.times[-1] > self.max_gap_s:
            events += self._close(ch, now)
            chain = self._chains[ch]
        chain.times.append(t)
        chain.peaks.append(peak)
        if not chain.announced and len(chain.times) >= self.min_potentials:
            chain.announced = True
            times, peaks = _trim(chain.times, chain.peaks, self.min_potentials)
            events.append(
                EmgEvent(EmgEventKind.ACTIVITY_START, now, self.channels[ch], float(times[0]),
                         peak_uV=float(max(peaks)), potentials=len(times))
            )
        return events

    def _close(self, ch: int, now: float) -> list[EmgEvent]:
        chain = self._chains[ch]
        self._chains[ch] = _Chain()
        if not chain.announced:
            return []
        kept, peaks = _trim(chain.times, chain.peaks, self.min_potentials)
        times = np.array(kept)
        duration = float(times[-1] - times[0])
        isi = np.diff(times)
        cv = float(np.std(isi) / np.mean(isi)) if len(isi) >= 2 and np.mean(isi) > 0 else 1.0
        pattern = "train" if cv <= self.train_cv else "burst"
        rate = (len(times) - 1) / duration if duration > 0 else None
        return [
            EmgEvent(EmgEventKind.ACTIVITY, now, self.channels[ch], float(times[0]), duration,
                     float(max(peaks)), pattern, len(times), rate)
        ]

    def _cautery_end(self, now: float) -> EmgEvent:
        since = self._cautery_since if self._cautery_since is not None else now
        last = self._cautery_last if self._cautery_last is not None else now
        self._cautery_since = None
        self._cautery_last = None
        return EmgEvent(EmgEventKind.CAUTERY_END, now, None, since, last - since)


def _trim(times: list[float], peaks: list[float], keep: int) -> tuple[list[float], list[float]]:
    """Drop stray potentials at either end of a chain (e.g. a heartbeat just before a
    burst): separated by more than 6 median intervals (and 100 ms) and smaller than half
    the chain's median potential."""
    t, p = list(times), list(peaks)
    while len(t) > keep:
        limit = max(_EDGE_FACTOR * float(np.median(np.diff(t))), _EDGE_MIN_S)
        small = _EDGE_SIZE * float(np.median(p))
        if t[1] - t[0] > limit and p[0] < small:
            t, p = t[1:], p[1:]
        elif t[-1] - t[-2] > limit and p[-1] < small:
            t, p = t[:-1], p[:-1]
        else:
            break
    return t, p
