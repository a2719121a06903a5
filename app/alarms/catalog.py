"""The alarm catalogue: every alarm condition the monitor knows, defined as data.

Owns: ``AlarmKind``, ``Category``, ``Latch``, ``AlarmDefinition`` and ``CATALOG``.
May import: the standard library and ``app.model``.

IEC 60601-1-8 does not say which conditions are alarms or what priority they carry; this
table is where the product decides (following ``clinical-rules.md``). Each row says what
the nurse reads (``title`` and ``message``) and what to do (``action``).

| kind                 | category      | priority | latch       | momentary | escalates to |
|----------------------|---------------|----------|-------------|-----------|--------------|
| loss_of_signal       | physiological | high     | until reset | no        | high, louder |
| combined_event       | physiological | high     | until reset | no        | high, louder |
| amplitude_decrease   | physiological | medium   | none        | no        | high         |
| neuromuscular_blockade_suspected | physiological | medium | none  | no        | high         |
| poor_baseline        | physiological | low      | until ack   | yes       | medium       |
| no_current           | technical     | medium   | until ack   | yes       | high         |
| board_link_lost      | technical     | high     | until ack   | no        | high, louder |
| board_fault          | technical     | high     | until ack   | no        | high, louder |
| lead_off             | technical     | medium   | none        | no        | high         |
| storage_problem      | technical     | medium   | until ack   | no        | (none)       |
| audio_failure        | technical     | high     | until ack   | no        | high, louder |
| engine_fault         | technical     | high     | until ack   | no        | high, louder |
| signal_recovered     | physiological | info     | -           | -         | -            |
| nonrecurrent_nerve_suspected | physiological | info | -       | -         | -            |
| baseline_set         | physiological | info     | -           | -         | -            |

- **Latch** ``none``: the alarm disappears when its condition ends. ``until_ack``: it
  stays (silent once acknowledged) until it has been acknowledged *and* its condition
  has ended. ``until_reset``: it stays, even acknowledged, until the operator resets it
  after its condition ended: a loss of signal or combined event stays on the screen
  until someone consciously dismisses it.
- **Momentary**: the source reports an instant, not a state (the rules emit
  ``no_current`` once per episode and ``poor_baseline`` once per side), so the condition
  is considered ended as soon as it is raised; the latch keeps it until acknowledged.
- **Escalation** of an alarm left unacknowledged for ``alarms.escalation_s``: medium and
  low go one level up; a high alarm stays high and plays at full volume (``louder``).
  ``storage_problem`` does not escalate: the patient is still monitored.
- ``neuromuscular_blockade_suspected`` concerns both sides at once: it is raised under
  the key ``BOTH`` (``app.alarms.mapping``) and replaces the single-side amplitude
  decrease while it lasts.
- **Info** rows are notices: shown and logged, never sounded, never acknowledged.
- Deliberately *not* an alarm: a touchscreen UI disconnecting from the engine (the engine
  keeps monitoring and alarming; the UI shows its own reconnect message).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from types import MappingProxyType
from collections.abc import Mapping

from app.model import Priority


# The enumerations keep the ``str`` mix-in (not ``StrEnum``, whose members print
# differently): their values are what the journal and the API carry.
class AlarmKind(str, enum.Enum):  # noqa: UP042
    """Every alarm condition and notice the monitor knows (one catalogue row each)."""

    # physiological
    LOSS_OF_SIGNAL = "loss_of_signal"
    COMBINED_EVENT = "combined_event"
    AMPLITUDE_DECREASE = "amplitude_decrease"
    NEUROMUSCULAR_BLOCKADE_SUSPECTED = "neuromuscular_blockade_suspected"
    POOR_BASELINE = "poor_baseline"
    # technical
    NO_CURRENT = "no_current"
    BOARD_LINK_LOST = "board_link_lost"
    BOARD_FAULT = "board_fault"
    LEAD_OFF = "lead_off"
    STORAGE_PROBLEM = "storage_problem"
    AUDIO_FAILURE = "audio_failure"
    ENGINE_FAULT = "engine_fault"
    # information only
    SIGNAL_RECOVERED = "signal_recovered"
    NONRECURRENT_NERVE_SUSPECTED = "nonrecurrent_nerve_suspected"
    BASELINE_SET = "baseline_set"


class Category(str, enum.Enum):  # noqa: UP042
    """IEC 60601-1-8 alarm category: the patient's state or the equipment's."""

    PHYSIOLOGICAL = "physiological"
    TECHNICAL = "technical"


class Latch(str, enum.Enum):  # noqa: UP042
    """How long an alarm stays after its condition ended (see the module docstring)."""

    NONE = "none"
    UNTIL_ACK = "until_ack"
    UNTIL_RESET = "until_reset"


# Display and sort order: lower sorts first.
PRIORITY_RANK: Mapping[Priority, int] = MappingProxyType(
    {Priority.HIGH: 0, Priority.MEDIUM: 1, Priority.LOW: 2, Priority.INFO: 3}
)


@dataclass(frozen=True)
class AlarmDefinition:
    """One catalogue row: what the nurse reads and what the alarm system does."""

    kind: AlarmKind
    category: Category
    priority: Priority
    latch: Latch
    title: str  # short banner text
    message: str  # what happened, for the nurse
    action: str  # what to do
    momentary: bool = False
    escalate_to: Priority | None = None  # None: never escalates

    @property
    def is_info(self) -> bool:
        return self.priority is Priority.INFO

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind.value,
            "category": self.category.value,
            "priority": self.priority.value,
            "latch": self.latch.value,
            "title": self.title,
            "message": self.message,
            "action": self.action,
            "momentary": self.momentary,
            "escalate_to": self.escalate_to.value if self.escalate_to else None,
        }


P, T = Category.PHYSIOLOGICAL, Category.TECHNICAL
H, M, L, INFO = Priority.HIGH, Priority.MEDIUM, Priority.LOW, Priority.INFO

_DEFINITIONS = [
    AlarmDefinition(
        AlarmKind.LOSS_OF_SIGNAL, P, H, Latch.UNTIL_RESET,
        "LOSS OF SIGNAL",
        "No EMG response to a delivered stimulus of sufficient current, after a good "
        "signal at this site.",
        "Stop dissection and traction. Troubleshoot: current delivered? laryngeal "
        "twitch? stimulate the contralateral vagus; check tube depth and rotation. If "
        "confirmed, map the nerve distal to proximal.",
        escalate_to=H,
    ),
    AlarmDefinition(
        AlarmKind.COMBINED_EVENT, P, H, Latch.UNTIL_RESET,
        "COMBINED EVENT",
        "Continuous vagal response: amplitude fallen and latency risen against the "
        "baseline, the pattern of traction injury.",
        "Release traction now and wait for the signal to recover before continuing.",
        escalate_to=H,
    ),
    AlarmDefinition(
        AlarmKind.AMPLITUDE_DECREASE, P, M, Latch.NONE,
        "Check tube position",
        "Response amplitude fallen with stable latency: typical of tube displacement, "
        "secretions or relaxant, not of nerve injury.",
        "Check tube depth and rotation, then secretions on the electrodes, then ask the "
        "anaesthetist about relaxant (train-of-four); take a new baseline if the tube was "
        "moved.",
        escalate_to=H,
    ),
    AlarmDefinition(
        AlarmKind.NEUROMUSCULAR_BLOCKADE_SUSPECTED, P, M, Latch.NONE,
        "Blockade suspected: check train-of-four",
        "Responses on both sides have fallen with stable latency: a systemic cause "
        "(neuromuscular blockade), not a nerve injury. Both sides are poorly monitored "
        "until it wears off.",
        "Systemic cause: check train-of-four and relaxant with the anaesthetist; reverse "
        "or wait for recovery before relying on the monitor.",
        escalate_to=H,
    ),
    AlarmDefinition(
        AlarmKind.POOR_BASELINE, P, L, Latch.UNTIL_ACK,
        "Poor baseline: check tube",
        "The baseline response is below the adequate level.",
        "Check tube position and electrode contact; ask about neuromuscular blockade.",
        momentary=True, escalate_to=M,
    ),
    AlarmDefinition(
        AlarmKind.NO_CURRENT, T, M, Latch.UNTIL_ACK,
        "No stimulus current",
        "No stimulus current: check probe contact, return/ground leads, dry field.",
        "Touch tissue with the probe tip, check the return and ground leads, dry the "
        "field (fluid shunts the current). Never read this as a loss of signal.",
        momentary=True, escalate_to=H,
    ),
    AlarmDefinition(
        AlarmKind.BOARD_LINK_LOST, T, H, Latch.UNTIL_ACK,
        "Board link lost",
        "No data from the stimulator/amplifier board: the nerve is NOT being monitored.",
        "Check the USB cable and the board's power. The board stops stimulating by itself.",
        escalate_to=H,
    ),
    AlarmDefinition(
        AlarmKind.BOARD_FAULT, T, H, Latch.UNTIL_ACK,
        "Board fault",
        "The board reported a fault (over-current, watchdog reset or self-test failure).",
        "Check the displayed fault; if it persists, replace the board before continuing.",
        escalate_to=H,
    ),
    AlarmDefinition(
        AlarmKind.LEAD_OFF, T, M, Latch.NONE,
        "Lead off",
        "An EMG electrode is disconnected or has no contact: that side is not monitored.",
        "Check the tube electrode leads and connector, then run the tube check.",
        escalate_to=H,
    ),
    AlarmDefinition(
        AlarmKind.STORAGE_PROBLEM, T, M, Latch.UNTIL_ACK,
        "Storage problem",
        "The case record cannot be written safely (storage full, read-only or failing). "
        "Monitoring and alarms continue.",
        "Free space or replace the storage; export the case as soon as possible.",
        escalate_to=None,
    ),
    AlarmDefinition(
        AlarmKind.AUDIO_FAILURE, T, H, Latch.UNTIL_ACK,
        "Audio failure",
        "The loudspeaker output failed: alarms sound on the backup buzzer only and there "
        "are no response tones.",
        "Check the speaker and its cable; restart the monitor when it is safe to do so.",
        escalate_to=H,
    ),
    AlarmDefinition(
        AlarmKind.ENGINE_FAULT, T, H, Latch.UNTIL_ACK,
        "Monitor fault",
        "The monitoring engine hit an unexpected error: the nerve is not monitored until "
        "it has restarted.",
        "Wait for the automatic restart; if it repeats, stop relying on the monitor.",
        escalate_to=H,
    ),
    AlarmDefinition(
        AlarmKind.SIGNAL_RECOVERED, P, INFO, Latch.NONE,
        "Signal recovered",
        "The response amplitude is back above the recovery level.",
        "Continue; the earlier alarm stays on the list until it is reset.",
    ),
    AlarmDefinition(
        AlarmKind.NONRECURRENT_NERVE_SUSPECTED, P, INFO, Latch.NONE,
        "Non-recurrent nerve suspected",
        "The right vagal latency is unusually short: a non-recurrent laryngeal nerve is "
        "possible.",
        "Look for a non-recurrent nerve entering the larynx directly from the vagus.",
    ),
    AlarmDefinition(
        AlarmKind.BASELINE_SET, P, INFO, Latch.NONE,
        "Baseline set",
        "A new baseline was taken for this side.",
        "",
    ),
]

CATALOG: Mapping[AlarmKind, AlarmDefinition] = MappingProxyType({d.kind: d for d in _DEFINITIONS})


def definition(kind: AlarmKind | str) -> AlarmDefinition:
    """The catalogue row for ``kind`` (an ``AlarmKind`` or its value)."""
    try:
        return CATALOG[AlarmKind(kind)]
    except ValueError:
        known = ", ".join(k.value for k in AlarmKind)
        raise ValueError(f"unknown alarm kind {kind!r}; known kinds: {known}") from None


def check_catalog(catalog: Mapping[AlarmKind, AlarmDefinition]) -> None:
    """Refuse an inconsistent catalogue (used at import and by tests)."""
    for kind, d in catalog.items():
        if d.kind is not kind:
            raise ValueError(f"alarm catalogue: row {kind.value} describes {d.kind.value}")
        if d.is_info and (d.escalate_to is not None or d.latch is not Latch.NONE or d.momentary):
            raise ValueError(f"alarm catalogue: info row {kind.value} cannot latch or escalate")
        if d.momentary and d.latch is Latch.NONE:
            raise ValueError(f"alarm catalogue: momentary {kind.value} must latch")
        if d.escalate_to is not None and PRIORITY_RANK[d.escalate_to] > PRIORITY_RANK[d.priority]:
            raise ValueError(f"alarm catalogue: {kind.value} would escalate downwards")
        if not d.title or not d.message:
            raise ValueError(f"alarm catalogue: {kind.value} needs a title and a message")


check_catalog(CATALOG)
