"""The free-running EMG stream: gaps, the record, irritation and cautery, the display.

Owns: ``EmgStream``: each ``EmgBlock`` from the board checked for gaps, kept in the
case journal in chunks of ``emg_chunk_s`` (the chunk being filled is the case's, see
``CaseState.emg_chunk``; the journal writer encodes a full one, off this loop), fed to
the tube check's breathing window and to the free-running detector (irritation episodes
of the case, cautery in the room now), played on the loudspeaker, and reduced to min/max
bins for the ``emg`` stream.
May import: ``app.record.entries``/``waveform``, ``app.engine.context``/``ledger``/
``timebase``/``tube``/``seams``/``case_state``, ``firmware_bridge.messages``.

Stimulus epochs as stream samples: an epoch's samples are the stream's own, so while the
stream is journaled in full the stimulus entry says where they are (``epoch_in_stream``,
``waveform_in_stream``) instead of storing them twice. Its samples are checked, equal, as
they arrive; a chunk is not closed before the epochs in it are whole, and a full chunk keeps
its newest ``EPOCH_HOLD_S`` for the next one, so that an epoch arriving after its samples
still finds them (with a stimulus rate locked to the chunk length, every epoch would
otherwise fall just behind a closed chunk). An epoch the stream
does not keep whole (a gap, the case closing, samples that differ) gets its own
``stimulus_waveform`` entry at once; one whose EMG the writer leaves out for space gets it
from the writer (``fallback``). What a kill -9 loses: the EMG not yet journaled (at most
about ``2 x emg_chunk_s``) and with it the waveforms of the epochs in it; their
measurements are journaled with the stimulus.

Evoked responses are not spontaneous activity: the stimulus pipeline notes each
stimulus to the detector (``note_stimulus``), which holds the newest ``DETECT_LAG_S`` of
the stream back until the epochs of the stimuli in it have arrived, and leaves their
windows out.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from app import format as F
from app.engine.context import EngineContext
from app.engine.ledger import Ledger
from app.engine.seams import Detector, DetectorFactory, LaterEntry
from app.engine.timebase import TimeBase
from app.engine.tube import TubeDesk
from app.engine.case_state import EmgChunk, StreamEpoch
from app.record import entries as E
from app.record import waveform as W
from firmware_bridge.messages import BoardMessage, EmgBlock, StimEpoch

if TYPE_CHECKING:
    from app.analysis.freerun import EmgEvent

LABELS = ("EMG L", "EMG R")
# at most this much signal is joined into one block (``coalesce``): the loudspeaker and the
# display never get more at once than this
COALESCE_MAX_S = 0.25
# a full chunk keeps its newest samples this long for the next one: a stimulus's epoch comes
# after its samples (its response window, then the link and a coalesced block), and finds them
EPOCH_HOLD_S = 0.4


def coalesce(messages: Sequence[BoardMessage], max_s: float = COALESCE_MAX_S) -> list[BoardMessage]:
    """The board's messages as they arrived together, with each run of consecutive EMG
    blocks that continue one another (next ``first_sample``, same rate, scale and
    channels) joined into one block of at most ``max_s`` of signal. Nothing is reordered,
    dropped or changed: a joined block holds exactly the samples of its parts, stamped
    with the first part's board time. An engine that keeps up gets one block at a time and
    joins nothing; one that reads several at once (catching up, or stepped) analyses them
    in one pass instead of one per block."""
    out: list[BoardMessage] = []
    run: list[EmgBlock] = []

    def close_run() -> None:
        if len(run) == 1:
            out.append(run[0])
        elif run:
            first = run[0]
            out.append(EmgBlock(board_time_us=first.board_time_us, first_sample=first.first_sample,
                                sample_rate_hz=first.sample_rate_hz, nv_per_count=first.nv_per_count,
                                samples=np.concatenate([b.samples for b in run], axis=1)))
        run.clear()

    for m in messages:
        if isinstance(m, EmgBlock) and m.samples.ndim == 2:
            if run:
                last, first = run[-1], run[0]
                n = sum(b.samples.shape[1] for b in run)
                joins = (m.first_sample == last.first_sample + last.samples.shape[1]
                         and m.sample_rate_hz == first.sample_rate_hz and m.nv_per_count == first.nv_per_count
                         and m.samples.shape[0] == first.samples.shape[0] and m.samples.dtype == first.samples.dtype
                         and first.sample_rate_hz > 0 and n + m.samples.shape[1] <= max_s * first.sample_rate_hz)
                if not joins:
                    close_run()
            run.append(m)
            continue
        close_run()
        out.append(m)
    close_run()
    return out


class EmgStream:
    """The free-running EMG (see the module docstring)."""

    def __init__(self, ctx: EngineContext, time: TimeBase, ledger: Ledger, tube: TubeDesk,
                 detector_factory: DetectorFactory | None) -> None:
        self.ctx = ctx
        self.time = time
        self.ledger = ledger
        self.tube = tube
        self._detector_factory = detector_factory
        self.detector: Detector | None = None
        self._detector_rate: float | None = None
        self.cautery = False  # the detector says electrocautery is on now
        self._last_block_end: int | None = None
        self._clock_map: tuple[int, int, float] | None = None  # the last block: first sample, its board us, rate
        # display bins (bounded: published every emg_publish_s)
        self._bins_min: list[np.ndarray] = []
        self._bins_max: list[np.ndarray] = []
        self._bins_t: float | None = None
        self._rest: np.ndarray | None = None
        self._last_publish = ctx.clock.now()

    def settings_changed(self) -> None:
        """New settings: the detector is made again for the next block."""
        self.detector = None
        self._detector_rate = None

    def note_stimulus(self, t_s: float) -> None:
        """A stimulus at case time ``t_s``: its window is not free-running EMG."""
        if self.detector is not None:
            self.detector.note_stimulus(t_s)

    def block(self, b: EmgBlock) -> None:
        """One block of the stream."""
        rate = float(b.sample_rate_hz)
        uv = b.microvolts()
        n = uv.shape[1]
        t0 = self.time.case_t_of_board(b.board_time_us, latency_s=n / rate)
        counters = self.ctx.counters
        if self._last_block_end is not None and b.first_sample != self._last_block_end:
            counters["emg_gaps"] += 1
            self.flush()
        self._last_block_end = b.first_sample + n
        self._clock_map = (int(b.first_sample), int(b.board_time_us), rate)
        counters["emg_blocks"] += 1
        self.tube.feed(uv, t0, rate)
        if self._detector_factory is not None:
            self._detect(uv, t0, rate)
        self.ctx.outputs.emg(uv, rate, self.cautery)
        self._record(b, uv, t0, rate)
        if self.ledger.wants("emg"):
            self._display(uv, rate, t0)

    def _record(self, b: EmgBlock, uv: np.ndarray, t0: float, rate: float) -> None:
        """Keep the block for the case journal, an entry every ``emg_chunk_s``."""
        case = self.ctx.case
        opts = self.ctx.options
        if case is None or not opts.journal_emg or t0 + uv.shape[1] / rate <= 0.0:
            return  # no case, or EMG from before it opened
        chunk = case.emg_chunk
        if chunk.rate is not None and chunk.rate != rate:
            self.flush()
        if not chunk.blocks:
            chunk.first_sample, chunk.t_s, chunk.rate = b.first_sample, t0, rate
        chunk.blocks.append(uv)
        chunk.n += uv.shape[1]
        for ep in chunk.epochs:
            _check(ep, int(b.first_sample), uv)
        full = chunk.n >= rate * (opts.emg_chunk_s + EPOCH_HOLD_S)  # an entry of emg_chunk_s, the rest kept
        # an epoch's tail arrives a block or so after the epoch: the chunk waits for it (at most its length again)
        if chunk.n >= 2 * rate * (opts.emg_chunk_s + EPOCH_HOLD_S):
            self.flush()
        elif full and all(ep.complete or ep.bad for ep in chunk.epochs):
            self.flush(keep=self._keep(chunk, int(round(EPOCH_HOLD_S * rate))))

    @staticmethod
    def _keep(chunk: EmgChunk, hold: int) -> int:
        """How many of the chunk's newest samples stay for the next chunk: ``hold`` (an epoch
        arriving after its samples then finds them), more where an epoch of the chunk would
        be cut (an epoch is journaled with the chunk that holds it whole)."""
        first = chunk.first_sample if chunk.first_sample is not None else 0
        split = chunk.n - min(hold, chunk.n)
        moved = True
        while moved and split > 0:
            moved = False
            for ep in chunk.epochs:
                start = ep.first_sample - first
                if start < split < start + ep.n:
                    split, moved = max(0, start), True
        return chunk.n - split

    def epoch_in_stream(self, e: StimEpoch, index: int, t_s: float, res_uV: float) -> dict[str, Any] | None:
        """A stimulus epoch of the open case as samples of the stream being journaled (its
        ``waveform_in_stream``), or None: then its entry keeps its own waveform. Only when
        the stream is recorded in full, at the epoch's resolution, and the samples received
        so far are the epoch's own; the rest is checked as it arrives (``flush``)."""
        case = self.ctx.case
        chunk = case.emg_chunk if case is not None else None
        cmap = self._clock_map
        if (chunk is None or cmap is None or not self.ctx.options.journal_emg or chunk.first_sample is None
                or abs(res_uV - W.DEFAULT_RES_UV) > 1e-9 or float(e.sample_rate_hz) != cmap[2]
                or chunk.rate != cmap[2]):
            return None
        if self.ledger.recording().level:  # storage nearly full: the raw EMG is left out, the epoch is not
            return None
        first, board_us, rate = cmap
        start = first + int(round((e.board_time_us - board_us) * rate / 1e6)) - int(e.pre_samples)
        uv = e.microvolts()
        labels = LABELS[: uv.shape[0]]
        if start < chunk.first_sample or uv.shape[0] != chunk.blocks[0].shape[0]:
            return None
        ep = StreamEpoch(index, t_s, start, uv, int(e.pre_samples), rate, res_uV, tuple(labels))
        at = chunk.first_sample
        for block in chunk.blocks:
            _check(ep, at, block)
            at += block.shape[1]
        if ep.bad or (ep.checked == 0 and at > start):
            return None
        chunk.epochs.append(ep)
        return E.in_stream(start, ep.n, rate, ep.pre_samples, list(labels), res_uV)

    def flush(self, keep: int = 0) -> None:
        """Journal the case's EMG kept so far (a gap, a new rate, the chunk full, the case closing),
        with the epochs that refer to it: those found whole in it go along in case the writer
        leaves the EMG out (storage nearly full), the others get their own entry now. The
        newest ``keep`` samples (none of an epoch journaled now) stay for the next chunk, with
        the epochs in them."""
        case = self.ctx.case
        if case is None:
            return
        chunk = case.emg_chunk
        split = None if not keep or chunk.first_sample is None else chunk.first_sample + chunk.n - keep
        if split is None:
            epochs, chunk.epochs = chunk.epochs, []
        else:
            epochs = [ep for ep in chunk.epochs if ep.first_sample < split]
            chunk.epochs = [ep for ep in chunk.epochs if ep.first_sample >= split]
        taken = chunk.take(keep)
        along: list[Any] = []  # encoded only if the writer leaves the EMG out
        alone: list[Any] = []
        for ep in epochs:
            if ep.complete and taken is not None:
                along.append(functools.partial(_own_entry, ep))
            else:
                alone.append(_own_entry(ep))
        if taken is not None:  # (encoded by the journal writer, off this loop: the samples are not changed after)
            data, first, t_s, rate = taken
            make = functools.partial(E.emg_block, t_s, first, rate, data, labels=LABELS[: data.shape[0]])
            self.ledger.write_later(LaterEntry("emg_block", float(t_s), int(data.nbytes), make), fallback=along)
        for kind, payload, blob, t in alone:  # the stream did not keep them whole (a gap, the case closing)
            self.ctx.counters["epochs_outside_stream"] += 1
            self.ledger.write(kind, payload, blob, t_s=t)

    def _detect(self, uv: np.ndarray, t0: float, rate: float) -> None:
        if self._detector_rate != rate and self._detector_factory is not None:
            self.detector = self._detector_factory(self.ctx.settings, rate)
            self._detector_rate = rate
        if self.detector is None:
            return
        for item in self.detector.feed(uv, t0) or ():
            self._detected(item)

    def _display(self, uv: np.ndarray, rate: float, t0: float) -> None:
        per_bin = max(1, int(round(rate / self.ctx.options.emg_bin_hz)))
        if self._rest is not None and self._rest.shape[1]:
            t0 -= self._rest.shape[1] / rate
            uv = np.concatenate([self._rest, uv], axis=1)
        nb = uv.shape[1] // per_bin
        used = nb * per_bin
        self._rest = uv[:, used:].copy() if used < uv.shape[1] else None
        if nb:
            x = uv[:, :used].reshape(uv.shape[0], nb, per_bin)
            if self._bins_t is None:
                self._bins_t = t0
            self._bins_min.append(x.min(axis=2))
            self._bins_max.append(x.max(axis=2))
        now = self.ctx.clock.now()
        if now - self._last_publish >= self.ctx.options.emg_publish_s and self._bins_min:
            lo = np.concatenate(self._bins_min, axis=1)
            hi = np.concatenate(self._bins_max, axis=1)
            self.ledger.publish("emg", {
                "type": "emg", "t_s": round(float(self._bins_t or 0.0), 4), "bin_hz": rate / per_bin,
                "channels": {LABELS[i]: {"min": np.round(lo[i], 1).tolist(), "max": np.round(hi[i], 1).tolist()}
                             for i in range(min(2, lo.shape[0]))},
                "cautery": self.cautery,
            })
            self._bins_min, self._bins_max, self._bins_t = [], [], None
            self._last_publish = now

    def _detected(self, ev: EmgEvent) -> None:
        """One detector event: cautery, or an irritation episode."""
        kind = getattr(ev.kind, "value", ev.kind)
        if kind in ("cautery_start", "cautery_end"):
            self._cautery(kind == "cautery_start", ev)
        elif kind in ("activity_start", "activity"):
            self._irritation(kind, ev)

    def _cautery(self, starting: bool, ev: EmgEvent) -> None:
        if starting == self.cautery:
            return
        self.cautery = starting
        t = float(ev.t_s)
        payload: dict[str, Any] = {"state": "start" if starting else "end", "onset_s": float(ev.onset_s)}
        if ev.duration_s is not None:
            payload["duration_s"] = float(ev.duration_s)
        self.ledger.write("cautery", payload, t_s=t)
        self.ledger.event("emg", "cautery_start" if starting else "cautery_end",
                          "electrocautery: EMG audio muted, stimuli meanwhile invalid" if starting
                          else f"electrocautery ended ({payload.get('duration_s', 0.0):.1f} s)", detail=payload, t_s=t)

    def _irritation(self, kind: str, ev: EmgEvent) -> None:
        """An episode recognised (still going) or over; kept in the open case."""
        t = float(ev.t_s)
        case = self.ctx.case
        channel = str(ev.channel or "")
        side = "L" if channel.endswith("L") else "R"
        word = "left" if side == "L" else "right"
        if kind == "activity_start":
            if case is not None:
                case.irritation_active[side] = float(ev.onset_s)
            self.ledger.event("emg", "irritation_start", f"spontaneous EMG {word}: nerve irritation going on",
                              priority="info", side=side,
                              detail={"channel": channel, "onset_s": float(ev.onset_s), "pattern": ev.pattern}, t_s=t)
            return
        payload: dict[str, Any] = {"side": side, "onset_s": float(ev.onset_s),
                                   "duration_s": float(ev.duration_s or 0.0), "peak_uV": float(ev.peak_uV or 0.0),
                                   "channel": channel, "kind": ev.pattern}
        if case is not None:
            case.irritation_active.pop(side, None)
            case.irritation[side] = payload["onset_s"]
        self.ledger.write("irritation", payload, t_s=t)
        self.ledger.event("emg", "irritation",
                          f"nerve irritation {word}: {ev.pattern or 'activity'} "
                          f"{payload['duration_s']:.1f} s, peak {F.amp_text(payload['peak_uV'])}"
                          + (f", {ev.potentials} potentials at {ev.rate_hz:.0f}/s" if ev.rate_hz else ""),
                          priority="info", side=side,
                          detail={**payload, "potentials": ev.potentials, "rate_hz": ev.rate_hz}, t_s=t)


def _own_entry(ep: StreamEpoch) -> tuple[str, dict[str, Any], bytes, float]:
    """The ``stimulus_waveform`` entry that keeps an epoch's samples on their own."""
    payload, blob = E.stimulus_waveform(ep.index, ep.t_s, ep.uv, ep.rate, ep.pre_samples, list(ep.labels),
                                        res_uV=ep.res_uV)
    return "stimulus_waveform", payload, blob, ep.t_s


def _check(ep: StreamEpoch, first: int, uv: np.ndarray) -> None:
    """Compare the stream samples ``first`` .. of ``uv`` with the epoch where they continue it."""
    if ep.bad or ep.checked >= ep.n:
        return
    at = ep.first_sample + ep.checked  # the next sample to find
    if not first <= at < first + uv.shape[1]:
        if first > at:  # the stream jumped past it
            ep.bad = True
        return
    m = min(first + uv.shape[1] - at, ep.n - ep.checked)
    if np.array_equal(uv[:, at - first:at - first + m], ep.uv[:, ep.checked:ep.checked + m]):
        ep.checked += m
    else:
        ep.bad = True
