"""What a case owns: one value, created when the case opens, gone when it closes.

Owns: ``CaseState`` (everything that describes the patient of the open case), its parts
(``TubeCheck``, ``Trend``, ``EmgChunk``, ``Inbox``), its serialisation for the engine-state entry
(``to_json``/``restore``), and the decisions on what may cross from one case to the next
(``PRE_CASE_TUBE_CHECK_S``, ``CASE_ALARM_KINDS``).
May import: ``app.model``, ``app.alarms`` (the catalogue), ``app.settings``,
``app.engine.breathing`` and ``app.engine.seams``.

A day of cases, as the IONM team expects it
-------------------------------------------

When a case opens, everything that describes a patient starts empty: baselines, steps,
laryngoscopy findings, loss episodes, troubleshooting, mapping, staging advice (a new
rule engine), the last responses and trends, irritation episodes, the pending step, the
stimulus numbering, the rule-event counts and the list of recent events. When it closes,
all of it goes with the case (the record keeps it).

- **Tube check.** A check belongs to the patient the tube is in. One made during a case
  is that case's. One made while *no* case is open is kept for the next case only if it
  was made after the previous case closed and at most ``PRE_CASE_TUBE_CHECK_S`` before
  the new case opens (the nurse often checks the tube right after intubation, before the
  case is entered); the case journals it as measured before it opened. A check from a
  closed case never reaches the next one: with no check, the state shows none and
  "Start monitoring" waits for one.
- **Alarms.** When a case closes, the alarms that its measurements raised
  (``CASE_ALARM_KINDS``: loss of signal, combined event, amplitude decrease, poor
  baseline, no current) end: the condition ends and the alarm is reset, both journaled in
  the closing case as done by "case closed". The next patient never inherits them, nor
  their acknowledgements, nor the case's information notices. Technical alarms about the
  appliance (board link lost, board fault, lead off, storage problem, audio failure,
  engine fault) stay: the appliance is still in that state. Alarm audio paused or off
  during the case is back on: a new patient starts with the alarm sound on.
- **Settings.** Whatever was changed during the case (event threshold, alarm timing,
  volume, the surgeon profile chosen at case start) goes back at close to what was in
  force when the case opened; each change back is journaled in the closing case.
  A change made while no case is open is the appliance's until the engine restarts (the
  next case's settings entry records it).
- **Stimulator.** At close both outputs stop, and current, rate, pulse width, the probe's
  site, side and step and the continuous electrode's side go back to the configured
  values. Chosen while no case is open, they are kept for the case that opens next.
- **Reader messages.** The remote reader's messages to the OR (``Inbox``, handled by
  ``app.engine.inbox``) are the case's: journaled in it, in its report, and gone
  from the touchscreen when it closes. A message that arrives while no case is open is
  shown and journaled in no case; it is gone when the next case opens.
- **Not the case's:** the board link, its clock and faults, cautery detection (the room
  now), the free-running detector's noise estimate, storage and audio health, and the
  engine's diagnostic counters.

Resume after a crash: the engine-state entry holds ``to_json()`` whole, except what the
journal rebuilds or the engine supplies (``NOT_IN_SNAPSHOT`` says which and why).
"""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.alarms import AlarmKind
from app.engine.breathing import BreathingCheck, interrupted
from app.engine.seams import Rules
from app.model import Measurement
from app.settings import Settings

# A tube check made while no case was open counts for the next case for this long.
PRE_CASE_TUBE_CHECK_S = 30 * 60.0

# The alarms a case's measurements raise; they end when the case closes.
CASE_ALARM_KINDS = frozenset({
    AlarmKind.LOSS_OF_SIGNAL, AlarmKind.COMBINED_EVENT, AlarmKind.AMPLITUDE_DECREASE,
    AlarmKind.POOR_BASELINE, AlarmKind.NO_CURRENT,
})


class Trend:
    """One amplitude/latency series with bounded memory (decimated by two when full)."""

    __slots__ = ("t", "amp", "lat", "stride", "skip", "limit")

    def __init__(self, limit: int) -> None:
        self.t: list[float] = []
        self.amp: list[float | None] = []
        self.lat: list[float | None] = []
        self.stride = 1
        self.skip = 0
        self.limit = limit

    def add(self, t: float, amp: float | None, lat: float | None) -> None:
        """One point (kept when its turn in the current stride comes)."""
        self.skip += 1
        if self.skip < self.stride:
            return
        self.skip = 0
        self.t.append(round(t, 3))
        self.amp.append(None if amp is None else round(amp, 1))
        self.lat.append(None if lat is None else round(lat, 3))
        if len(self.t) >= self.limit:
            self.t, self.amp, self.lat = self.t[::2], self.amp[::2], self.lat[::2]
            self.stride *= 2


@dataclass
class TubeCheck:
    """One tube check: the impedances (``app.record.entries.tube_check`` payload) at once,
    then the breathing-variation window of free-running EMG."""

    result: dict[str, Any]
    t_clock: float  # engine clock time of the measurement
    breathing: BreathingCheck

    def breathing_json(self, now: float) -> dict[str, Any] | None:
        """The breathing variation: measuring while the window runs, else as journaled."""
        return self.breathing.json(now) if self.breathing.active else self.result.get("breathing_variation")


@dataclass
class StreamEpoch:
    """A stimulus epoch journaled as samples of the stream (``waveform_in_stream``) whose
    samples are not all journaled yet: kept until its EMG is handed to the journal."""

    index: int
    t_s: float
    first_sample: int
    uv: np.ndarray  # the epoch as the board sent it, (channels, n)
    pre_samples: int
    rate: float
    res_uV: float
    labels: tuple[str, ...]
    checked: int = 0  # leading samples found equal in the stream so far
    bad: bool = False  # the stream differs from the epoch: its own entry keeps it

    @property
    def n(self) -> int:
        """The epoch's length in samples."""
        return int(self.uv.shape[1])

    @property
    def complete(self) -> bool:
        """Every sample was found, equal, in the stream."""
        return not self.bad and self.checked >= self.n


@dataclass
class EmgChunk:
    """Free-running EMG of the case not yet journaled (one entry per ``emg_chunk_s``), and
    the stimulus epochs that refer to its samples."""

    blocks: list[np.ndarray] = field(default_factory=list)
    n: int = 0
    first_sample: int | None = None
    t_s: float | None = None
    rate: float | None = None
    epochs: list[StreamEpoch] = field(default_factory=list)

    def take(self, keep: int = 0) -> tuple[np.ndarray, int, float, float] | None:
        """(samples, first sample, case time, rate) of what is kept but its newest ``keep``
        samples, which stay as the start of the next chunk; None when nothing is taken."""
        blocks, first, t, rate = self.blocks, self.first_sample, self.t_s, self.rate
        self.blocks, self.n, self.first_sample, self.t_s = [], 0, None, None
        if not blocks or rate is None:
            return None
        data = np.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0]
        first_i, t_f = int(first or 0), float(t or 0.0)
        keep = max(0, min(int(keep), data.shape[1]))
        if keep:
            split = data.shape[1] - keep
            self.blocks, self.n = [data[:, split:]], keep
            self.first_sample, self.t_s = first_i + split, t_f + split / rate
            if not split:
                return None
            data = data[:, :split]
        return data, first_i, t_f, rate


class Inbox:
    """The remote reader's messages of one case, oldest first, each a dict (``app.engine.inbox``
    makes and changes them); beyond ``limit`` the oldest acknowledged one leaves the list first."""

    __slots__ = ("messages", "limit")

    def __init__(self, limit: int = 200) -> None:
        self.messages: list[dict[str, Any]] = []
        self.limit = limit

    def find(self, mid: str) -> dict[str, Any] | None:
        """The message with this id, or None."""
        return next((m for m in self.messages if m["id"] == mid), None)

    def waiting(self) -> list[dict[str, Any]]:
        """The messages not yet acknowledged, oldest first."""
        return [m for m in self.messages if not m["acknowledged"]]

    def add(self, msg: dict[str, Any]) -> None:
        """Keep one more message (the list stays within ``limit``)."""
        self.messages.append(msg)
        while len(self.messages) > self.limit:
            old = next((m for m in self.messages if m["acknowledged"]), self.messages[0])
            self.messages.remove(old)

    def to_json(self, case_id: str | None) -> dict[str, Any]:
        """The ``inbox`` stream message (``case_id`` None: between cases)."""
        return {"type": "inbox", "case_id": case_id, "messages": [dict(m) for m in self.messages],
                "unacknowledged": len(self.waiting())}


def _events(kept: int = 2000) -> collections.deque[dict[str, Any]]:
    return collections.deque(maxlen=kept)


@dataclass(eq=False)
class CaseState:
    """Everything the open case owns (see the module docstring)."""

    case_id: str
    data: dict[str, Any]
    rules: Rules
    settings_before: Settings  # in force when the case opened: back to these at close
    profile_before: str | None = None
    resumed: bool = False
    stim_index: int = 0  # the next stimulus's number (the case's stimuli are numbered from 0)
    rule_counts: collections.Counter[str] = field(default_factory=collections.Counter)
    staging_seen: int = 0  # staging recommendations already journaled
    pending_step: dict[str, Any] | None = None  # step.tag which=next: the next valid response
    tube: TubeCheck | None = None
    tube_override: dict[str, Any] | None = None
    last: dict[str, dict[str, Any]] = field(default_factory=dict)  # side -> last measurement (+ pct)
    last_valid: dict[tuple[str, str], Measurement] = field(default_factory=dict)  # (site, side) -> measurement
    trends: dict[str, Trend] = field(default_factory=dict)  # "side-site-source" -> series
    irritation: dict[str, float] = field(default_factory=dict)  # side -> onset of the last finished episode
    irritation_active: dict[str, float] = field(default_factory=dict)  # side -> onset of an episode going on
    events: collections.deque[dict[str, Any]] = field(default_factory=_events)
    emg_chunk: EmgChunk = field(default_factory=EmgChunk)
    inbox: Inbox | None = None  # the reader's messages; None until read back from the journal (first use)

    # fields the engine-state entry leaves out, and why
    NOT_IN_SNAPSHOT = {
        "case_id": "the journal's case row",
        "data": "the journal's case row (case.update changes are journaled operator entries)",
        "rules": "serialised beside the case state (the rules' own snapshot)",
        "settings_before": "the configuration the restarted engine was started with",
        "profile_before": "the profile the restarted engine was started with",
        "resumed": "set by the resume itself",
        "last": "rebuilt from the journaled stimuli",
        "last_valid": "rebuilt from the journaled stimuli",
        "trends": "rebuilt from the journaled stimuli",
        "irritation_active": "an episode going on when the engine stopped: the restarted detector starts afresh",
        "events": "in the journal; the list in memory restarts with the resume",
        "emg_chunk": "a write buffer of at most emg_chunk_s; its EMG is lost with the engine",
        "inbox": "rebuilt from the journal's reader_message entries on first use",
    }

    def to_json(self, origin: float) -> dict[str, Any]:
        """The case's part of the engine-state entry (``origin``: clock time of case time 0)."""
        tube = self.tube
        return {
            "stim_index": self.stim_index, "rule_counts": dict(self.rule_counts), "staging_seen": self.staging_seen,
            "pending_step": self.pending_step,
            "tube": None if tube is None else tube.result,
            "tube_t_s": None if tube is None else round(tube.t_clock - origin, 6),
            "tube_override": self.tube_override,
            "irritation": dict(self.irritation),
        }

    def restore(self, d: dict[str, Any], origin: float, settings: Settings) -> None:
        """Load ``to_json()`` (crash resume); a breathing window cut short is not measured."""
        self.stim_index = int(d["stim_index"])
        self.rule_counts = collections.Counter({str(k): int(v) for k, v in (d.get("rule_counts") or {}).items()})
        self.staging_seen = int(d.get("staging_seen", 0))
        self.pending_step = d.get("pending_step")
        result = d.get("tube")
        self.tube = None
        if isinstance(result, dict):
            if result.get("breathing_variation") is not None:
                result = {**result, "breathing_variation": interrupted(result["breathing_variation"])}
            t = d.get("tube_t_s")
            self.tube = TubeCheck(result, origin + float(t if t is not None else 0.0), BreathingCheck(settings))
        self.tube_override = d.get("tube_override")
        self.irritation = {str(k): float(v) for k, v in (d.get("irritation") or {}).items()}

    @classmethod
    def field_names(cls) -> list[str]:
        """Every field of the case state (a test checks each is serialised or said why not)."""
        return [f.name for f in dataclasses.fields(cls)]
