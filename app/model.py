"""The clinical vocabulary shared by every stage of the engine.

Owns: the ``Stimulus`` a measurement belongs to, the ``Measurement`` of one epoch, the
``RuleEvent`` the rules raise and their enumerations; and, as the one place ``app``
imports them from, sites, sides, sources, INMSG steps and the EMG channel labels, defined
in ``firmware_bridge.vocabulary`` (the virtual board speaks them too, and
``firmware_bridge`` never imports ``app``). No other module declares them again.
May import: the standard library and ``firmware_bridge.vocabulary``. Everything in
``app`` may import this module.

Field names and values match ``shared/specs/recording-exchange.md`` so that the live
engine, ``lnm analyze`` and the case record speak the same language.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

from firmware_bridge.vocabulary import (
    CHANNEL_LABELS,
    NERVES,
    SIDES,
    SITES,
    SOURCES,
    STEPS,
    Side,
    Site,
    Source,
    Step,
)

__all__ = [
    "CHANNEL_LABELS", "NERVES", "SIDES", "SITES", "SOURCES", "STEPS", "Side", "Site", "Source", "Step",
    "InvalidReason", "Priority", "EventKind", "Stimulus", "Measurement", "RuleEvent",
]


# The enumerations keep the ``str`` mix-in (not ``StrEnum``, whose members print
# differently): every stage and the record compare and serialise their values.
class InvalidReason(str, enum.Enum):  # noqa: UP042
    """Why the analysis could not measure an epoch."""

    CAUTERY = "cautery"
    SATURATED = "saturated"
    NO_CURRENT = "no_current"
    ARTIFACT = "artifact"
    NO_CHANNEL = "no_channel"
    OTHER_STIMULUS = "other_stimulus"  # the other output's pulse may have put its response in the window


class Priority(str, enum.Enum):  # noqa: UP042
    """IEC 60601-1-8 alarm priority of a condition (``info``: never sounded)."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"  # shown and recorded, never sounded as an alarm


class EventKind(str, enum.Enum):  # noqa: UP042
    """What the rules recognise (``shared/specs/recording-exchange.md`` lists them)."""

    LOSS_OF_SIGNAL = "loss_of_signal"
    COMBINED_EVENT = "combined_event"
    AMPLITUDE_DECREASE = "amplitude_decrease"
    SIGNAL_RECOVERED = "signal_recovered"
    NO_CURRENT = "no_current"
    NONRECURRENT_NERVE_SUSPECTED = "nonrecurrent_nerve_suspected"
    POOR_BASELINE = "poor_baseline"
    BASELINE_SET = "baseline_set"
    # a new loss at a site within ``rules.los_reentry_s`` of the end of its episode: the
    # same episode and alarm condition go on (no new loss-of-signal onset)
    LOSS_OF_SIGNAL_CONTINUED = "loss_of_signal_continued"
    # both sides depressed with stable latency: a systemic cause, not a nerve injury
    NEUROMUSCULAR_BLOCKADE_SUSPECTED = "neuromuscular_blockade_suspected"


@dataclass(frozen=True)
class Stimulus:
    """One stimulus as the engine (or an EDF+ STIM annotation) describes it."""

    index: int
    t_s: float  # stimulus onset, seconds from the start of the recording/case
    site: Site
    side: Side
    source: Source
    set_mA: float
    delivered_mA: float | None = None  # None: not measured by the stimulator
    pw_us: int = 100
    step: Step | None = None


@dataclass(frozen=True)
class Measurement:
    """The analysis of one stimulus epoch on its ipsilateral channel."""

    stimulus: Stimulus
    channel: str | None
    valid: bool
    invalid_reason: InvalidReason | None
    response: bool
    amplitude_uV: float | None  # peak-to-peak, even below threshold; None if invalid
    latency_ms: float | None  # to the first major peak; None without a response
    onset_latency_ms: float | None

    @property
    def t_end_s(self) -> float:
        """End of the analysis window: when a rule can recognise its condition."""
        return self.stimulus.t_s + 0.050

    def to_json(self) -> dict[str, Any]:
        s = self.stimulus
        return {
            "index": s.index,
            "t_s": round(s.t_s, 6),
            "site": s.site.value,
            "side": s.side.value,
            "source": s.source.value,
            "set_mA": s.set_mA,
            "delivered_mA": s.delivered_mA,
            "pw_us": s.pw_us,
            "step": s.step.value if s.step else None,
            "channel": self.channel,
            "valid": self.valid,
            "invalid_reason": self.invalid_reason.value if self.invalid_reason else None,
            "response": self.response,
            "amplitude_uV": None if self.amplitude_uV is None else round(self.amplitude_uV, 2),
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 3),
            "onset_latency_ms": None
            if self.onset_latency_ms is None
            else round(self.onset_latency_ms, 3),
        }


@dataclass(frozen=True)
class RuleEvent:
    """Something the rules recognised. ``t_s`` is when it was recognised."""

    t_s: float
    kind: EventKind
    side: Side
    site: Site
    priority: Priority
    stimulus_index: int | None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = self.kind.value
        d["side"] = self.side.value
        d["site"] = self.site.value
        d["priority"] = self.priority.value
        d["t_s"] = round(self.t_s, 6)
        return d
