"""The engine core's seams: what ``Monitor`` needs from the objects injected into it.

Owns: the ``typing.Protocol`` of every collaborator the core is given (the case journal,
the appliance outputs, the epoch analyzer, the rule engine, the free-running detector,
the case documentation, the publishing sink and the subscription test), the do-nothing
defaults (``Outputs``, ``NullJournal``) and the default factories, which import the real
analysis and rules when first used.
May import: ``app.model``, ``app.settings``, ``app.record.entries``, ``app.rules.procedure``
and ``app.alarms``/``app.analysis``/``app.rules.engine`` (types only), ``firmware_bridge.messages``.

A test or a benchmark replaces any of these by an object of the same shape; the core
never asks which class it got (no ``hasattr`` probing), so a missing method is a type
error, not a silent difference in behaviour.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from app.model import Measurement, RuleEvent, Side, Site, Source, Step, Stimulus
from app.record import entries as E
from app.settings import Settings
from firmware_bridge.messages import StimEpoch

if TYPE_CHECKING:
    from app.alarms import AlarmState
    from app.analysis.freerun import EmgEvent
    from app.rules.engine import StepRecord
    from app.rules.procedure import Procedure

# one journal entry of a transaction: kind, payload, blob, case time
JournalItem = tuple[str, Mapping[str, Any], bytes | None, float]
# an entry written only if the writer needs it (the epochs of EMG it leaves out): the entry,
# or what makes it then (its waveform is encoded only when it is needed)
FallbackItem = JournalItem | Callable[[], JournalItem]




@dataclass(frozen=True)
class LaterEntry:
    """A journal entry whose payload and blob the journal writer makes when it writes it: the
    raw EMG's lossless encoding (a millisecond a second of signal) runs on the writer's
    thread, off the engine loop. ``make()`` gives (payload, blob); ``size``: about the bytes
    it will take (the backlog's accounting)."""

    kind: str
    t_s: float
    size: int
    make: Callable[[], tuple[Mapping[str, Any], bytes | None]]


# what the ledger hands the writer: an entry, or one made when it is written
QueuedItem = JournalItem | LaterEntry


def item_kind(item: QueuedItem) -> str:
    """The entry kind of a queued item."""
    return item.kind if isinstance(item, LaterEntry) else item[0]


def made_items(items: Sequence[QueuedItem]) -> list[JournalItem]:
    """The entries, those made later made and validated now (``ValueError`` for one that
    is invalid or cannot be made)."""
    out: list[JournalItem] = []
    for item in items:
        if isinstance(item, LaterEntry):
            try:
                payload, blob = item.make()
            except ValueError:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. the FLAC library's error: the entry is refused, not the writer
                raise ValueError(f"{item.kind} entry cannot be made: {exc}") from exc
            E.validate(item.kind, payload, blob)
            out.append((item.kind, payload, blob, item.t_s))
        else:
            out.append(item)
    return out


def fallback_items(fallback: Sequence[FallbackItem]) -> list[JournalItem]:
    """The fallback entries, made and validated now (``ValueError`` for an invalid one)."""
    items = [item() if callable(item) else item for item in fallback]
    for kind, payload, blob, _t in items:
        E.validate(kind, payload, blob)
    return items

# the API server's publish(stream, message, sticky); it never blocks
Sink = Callable[[str, Mapping[str, Any], bool], None]
# does some client subscribe to this stream (the engine skips building the others)
Wants = Callable[[str], bool]


class Journal(Protocol):
    """The case journal (``app.record.journal.Journal``): append-only, one case at a time."""

    def open_case(self, case_data: Mapping[str, Any]) -> str: ...

    def append(self, case_id: str, kind: str, payload: Mapping[str, Any], blob: bytes | None = None,
               t_s: float | None = None) -> int | None: ...

    def append_many(self, case_id: str, items: Iterable[JournalItem]) -> Sequence[int | None]: ...

    def close_case(self, case_id: str, payload: Mapping[str, Any] | None = None) -> int | None: ...

    def durable_seq(self, case_id: str) -> int: ...

    def head_seq(self, case_id: str) -> int: ...

    def flush(self) -> bool: ...

    @property
    def status(self) -> Any: ...


@runtime_checkable
class CaseLister(Protocol):
    """A journal that can list its cases (``cases.list``); ``NullJournal`` cannot."""

    def cases(self) -> list[dict[str, Any]]: ...


class Analyzer(Protocol):
    """Measures one stimulus epoch (``app.analysis.EpochAnalyzer``)."""

    def measure_board_epoch(self, e: StimEpoch, stim: Stimulus, channel_labels: Sequence[str] | None = None,
                            other_onsets: Sequence[int] = ()) -> Measurement: ...


class Rules(Protocol):
    """The INMSG rules of one case (``app.rules.engine.RuleEngine``)."""

    procedure: Procedure

    def process(self, m: Measurement) -> list[RuleEvent]: ...

    def set_settings(self, settings: Settings) -> None: ...

    def aps_baseline(self, side: Side) -> dict[str, Any] | None: ...

    def probe_baseline(self, site: Site, side: Side) -> dict[str, Any] | None: ...

    def rebaseline(self, side: Side, source: Source = Source.APS, t_s: float = 0.0,
                   site: Site | None = None) -> list[RuleEvent]: ...

    def capture_baseline(self, site: Site, side: Side, measurement: Measurement,
                         t_s: float | None = None) -> list[RuleEvent]: ...

    def tag_step(self, step: Step, side: Side, t_s: float,
                 measurement: Measurement | None = None) -> dict[str, Any]: ...

    def record_step(self, step: Step, side: Side, t_s: float,
                    measurement: Measurement | None = None) -> StepRecord: ...

    def take_documented_steps(self) -> list[dict[str, Any]]: ...

    def add_mapping_point(self, side: Side, position_mm: float, t_s: float, response: bool | None = None,
                          label: str = "", measurement: Measurement | None = None) -> dict[str, Any]: ...

    def state(self) -> dict[str, Any]: ...

    def snapshot(self) -> dict[str, Any]: ...


class Detector(Protocol):
    """Free-running EMG: irritation and cautery (``app.analysis.freerun.FreeRunDetector``)."""

    def note_stimulus(self, t_s: float) -> None: ...

    def feed(self, block_uV: np.ndarray, t0_s: float) -> list[EmgEvent]: ...


class DocumentMaker(Protocol):
    """The case documentation (``app.engine.documents.Documents``)."""

    def report(self, case_id: str, pdf: bool = True) -> dict[str, Any]: ...

    def export(self, case_id: str, target: str | None = None, pseudonymise: bool = True) -> dict[str, Any]: ...


AnalyzerFactory = Callable[[Settings], Analyzer]
RulesFactory = Callable[[Settings], Rules]
DetectorFactory = Callable[[Settings, float], Detector]
SettingsLoader = Callable[[Path | None, str | None], Settings]


class Outputs(Protocol):
    """What the core needs from the appliance outputs (sounds, LEDs, buzzer).

    ``app.engine.outputs`` adapts ``app.outputs`` to it; ``NullOutputs`` does nothing. An
    implementation that subclasses it inherits these do-nothing methods.
    """

    def alarm_state(self, state: AlarmState) -> None:
        """The alarm system's state after a change (and at every tick)."""
        return None

    def stimulus(self, m: Measurement, response: bool) -> None:
        """A stimulus was measured (feedback tones)."""
        return None

    def emg(self, samples_uV: np.ndarray, sample_rate_hz: float, muted: bool) -> None:
        """A block of free-running EMG (audible EMG; ``muted`` during cautery)."""
        return None

    def update(self) -> None:
        """Time passed: play what is due."""
        return None

    def settings_changed(self, settings: Settings) -> None:
        """New settings (volume, tones)."""
        return None

    def status(self) -> tuple[bool, str]:
        """(works, message) of the loudspeaker."""
        return True, ""

    def describe(self) -> str:
        """The audio output in the nurse's words."""
        return "none"

    def self_test(self) -> list[dict[str, Any]]:
        """Play the self-test; one result per item (``app.engine.selftest``: an output
        played but not observed is ``status: "confirm"``, never ok)."""
        return [{"item": "audio", "status": "failed", "check": "readback", "message": "no audio output configured"}]


class NullOutputs(Outputs):
    """No outputs (tests, benchmarks, an engine before its outputs are made)."""


class _NullStatus:
    ok = True
    problem = ""
    message = ""


class NullJournal:
    """A journal that keeps nothing (tests, benchmarks). It checks every entry as the real
    journal would and calls everything durable: it is a stand-in, never a record."""

    path = None
    space_warning = None
    status = _NullStatus()

    def __init__(self) -> None:
        self.count = 0
        self._n = 0

    def open_case(self, case_data: Mapping[str, Any]) -> str:
        """A new case id (the one given in ``case_data``, else one of its own)."""
        self._n += 1
        return str(case_data.get("case_id") or f"case-{self._n}")

    def durable_seq(self, case_id: str) -> int:
        """Everything counts as written."""
        return self.count

    def head_seq(self, case_id: str) -> int:
        """The newest entry number."""
        return self.count

    def flush(self) -> bool:
        """Nothing waits."""
        return True

    def append(self, case_id: str, kind: str, payload: Mapping[str, Any], blob: bytes | None = None,
               t_s: float | None = None) -> int:
        """Check the entry as the real journal would, keep nothing."""
        E.validate(kind, payload, blob)
        self.count += 1
        return self.count

    def append_many(self, case_id: str, items: Iterable[JournalItem]) -> list[int]:
        """``append`` each entry."""
        return [self.append(case_id, kind, payload, blob, t_s) for kind, payload, blob, t_s in items]

    def close_case(self, case_id: str, payload: Mapping[str, Any] | None = None) -> int:
        """Count the closing entry."""
        self.count += 1
        return self.count


DETECT_LAG_S = 0.08  # free-running detection waits this long for the epochs of the stimuli in the stream


def default_analyzer(settings: Settings) -> Analyzer:
    """The real epoch analysis (``app.analysis.EpochAnalyzer``)."""
    from app.analysis import EpochAnalyzer

    return EpochAnalyzer(settings)


def default_rules(settings: Settings) -> Rules:
    """The real INMSG rules (``app.rules.engine.RuleEngine``)."""
    from app.rules.engine import RuleEngine

    return RuleEngine(settings)


def default_detector(settings: Settings, sample_rate_hz: float) -> Detector:
    """The real free-running detector, holding back ``DETECT_LAG_S`` for the stimuli's epochs."""
    from app.analysis.freerun import FreeRunDetector

    return FreeRunDetector(settings, sample_rate_hz, stimulus_wait_s=DETECT_LAG_S)


__all__ = [
    "Analyzer", "AnalyzerFactory", "CaseLister", "DETECT_LAG_S", "Detector", "DetectorFactory", "DocumentMaker",
    "FallbackItem", "Journal", "JournalItem", "LaterEntry", "NullJournal", "NullOutputs", "Outputs", "QueuedItem",
    "Rules", "RulesFactory", "SettingsLoader", "Sink", "Wants",
    "default_analyzer", "default_detector", "default_rules", "fallback_items", "item_kind", "made_items",
]
