"""The free-running EMG stream: gaps, the record, irritation and cautery, the display.

Owns: ``EmgStream``: each ``EmgBlock`` from the board checked for gaps, kept in the
case journal in chunks of ``emg_chunk_s`` (the chunk being filled is the case's, see
``CaseState.emg_chunk``), fed to the tube check's breathing window and to the
free-running detector (irritation episodes of the case, cautery in the room now), played
on the loudspeaker, and reduced to min/max bins for the ``emg`` stream.
May import: ``app.record.entries``, ``app.engine.context``/``ledger``/``timebase``/
``tube``/``seams``, ``firmware_bridge.messages``.

Evoked responses are not spontaneous activity: the stimulus pipeline notes each
stimulus to the detector (``note_stimulus``), which holds the newest ``DETECT_LAG_S`` of
the stream back until the epochs of the stimuli in it have arrived, and leaves their
windows out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from app import format as F
from app.engine.context import EngineContext
from app.engine.ledger import Ledger
from app.engine.seams import Detector, DetectorFactory
from app.engine.timebase import TimeBase
from app.engine.tube import TubeDesk
from app.record import entries as E
from firmware_bridge.messages import EmgBlock

if TYPE_CHECKING:
    from app.analysis.freerun import EmgEvent

LABELS = ("EMG L", "EMG R")


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
        if chunk.n >= rate * opts.emg_chunk_s:
            self.flush()

    def flush(self) -> None:
        """Journal the case's EMG kept so far (a gap, a new rate, the chunk full, the case closing)."""
        case = self.ctx.case
        if case is None:
            return
        taken = case.emg_chunk.take()
        if taken is None:
            return
        data, first, t_s, rate = taken
        payload, blob = E.emg_block(t_s, first, rate, data, labels=LABELS[: data.shape[0]])
        self.ledger.write("emg_block", payload, blob, t_s=payload["t_s"])

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
