"""What the rooms of the engine share: the clock, the settings, the outputs, the open case.

Owns: ``EngineOptions`` (how the engine runs: not clinical settings) and
``EngineContext``, a plain holder without behaviour that ``Monitor`` builds once and
hands to each of its rooms, so that a change (new settings, the outputs adapter set
after construction, a case opening) is seen by all of them at once.
May import: ``app.settings``, ``app.engine.seams``, ``app.engine.case_state``,
``firmware_bridge.clock``/``messages``.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from app.engine.case_state import CaseState
from app.engine.seams import Outputs
from app.settings import Settings
from firmware_bridge.clock import Clock
from firmware_bridge.messages import HostMessage


@dataclass
class EngineOptions:
    """How the engine runs (not clinical settings: those live in ``app.settings``)."""

    stream_decimation: int = 1  # ConfigureAcquisition.stream_decimation for the free-running stream
    journal_emg: bool = True  # keep the free-running EMG in the journal
    emg_chunk_s: float = 1.0  # free-running EMG journal entry length
    display_epoch_hz: int = 5000  # epoch waveforms decimated to this rate for display
    emg_bin_hz: int = 1000  # free-running EMG envelope bins per second for display
    emg_publish_s: float = 0.1
    state_publish_s: float = 0.1
    snapshot_every_s: float = 10.0  # engine-state entry at least this often while stimuli arrive
    events_kept: int = 2000
    trend_points: int = 2000  # per series, then decimated by two
    allow_sim_control: bool = True


@dataclass(eq=False)
class EngineContext:
    """Shared by every room (see the module docstring)."""

    clock: Clock
    settings: Settings
    options: EngineOptions
    outputs: Outputs
    profile: str | None = None  # the surgeon profile of the settings in force
    case: CaseState | None = None  # the open case; None between cases
    counters: collections.Counter[str] = field(default_factory=collections.Counter)  # engine diagnostics
    to_board: list[HostMessage] = field(default_factory=list)  # host messages not yet taken by the shell

    def send(self, msg: HostMessage) -> None:
        """A message for the board (sent by the shell after this input)."""
        self.to_board.append(msg)
