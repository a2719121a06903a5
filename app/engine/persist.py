"""The engine-state entry: what lets a case resume after a crash or a power loss.

Owns: ``Persistence``: an ``engine`` entry with ``event = "state"`` written into the
open case's journal when something a resume needs has changed (an alarm transition, a
rule event, an operator action, a tube check) and at least every ``snapshot_every_s``
while stimuli arrive; and ``engine_state``, the entry's content (``ENGINE_STATE_FORMAT``:
the rules' snapshot, the alarm manager's state, the case state, the stimulator, the
settings that differ from their defaults and the surgeon profile).
May import: ``app.settings``, ``app.alarms``, ``app.engine.context``/``ledger``/
``timebase``/``stimulator``.

Reading it back is ``app.engine.lifecycle.restore_engine_state`` (and ``app.engine.resume``,
which finds the entry and the stimuli journaled after it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app import __version__
from app.alarms import AlarmManager
from app.engine.context import EngineContext
from app.engine.ledger import Ledger
from app.engine.stimulator import Stimulator
from app.engine.timebase import TimeBase
from app.settings import SCHEMA

ENGINE_STATE_FORMAT = "lnm-engine-state/1"


def engine_state(ctx: EngineContext, time: TimeBase, alarms: AlarmManager, stim: Stimulator) -> dict[str, Any]:
    """The content of an engine-state entry (``case`` and ``rules`` None with no case open)."""
    case = ctx.case
    return {
        "format": ENGINE_STATE_FORMAT,
        "t_s": round(time.now_t(), 6),
        "rules": case.rules.snapshot() if case is not None else None,
        "alarms": alarms.to_state(),
        "case": None if case is None else {
            **stim.to_json(), **case.to_json(time.origin),
            "settings": {k: v for k, v in ctx.settings.items() if v != SCHEMA[k].default},
            "profile": ctx.profile,
        },
    }


class Persistence:
    """When to write the engine-state entry (see the module docstring)."""

    def __init__(self, ctx: EngineContext, ledger: Ledger, state: Callable[[], dict[str, Any]]) -> None:
        self.ctx = ctx
        self.ledger = ledger
        self._state = state
        self.dirty = False
        self.stimuli_since = 0
        self.last_t = ctx.clock.now()

    def changed(self) -> None:
        """Something a resume needs changed: an entry at the end of this input."""
        self.dirty = True

    def stimulus(self) -> None:
        """A stimulus of the case was processed."""
        self.stimuli_since += 1

    def case_opened(self) -> None:
        """A new case: nothing of it is due yet."""
        self.dirty = False
        self.stimuli_since = 0
        self.last_t = self.ctx.clock.now()

    def write(self) -> None:
        """An engine-state entry now (nothing with no case open)."""
        if self.ctx.case is None:
            return
        self.ledger.write("engine", {"event": "state", "version": __version__, "detail": self._state()})
        self.dirty = False
        self.stimuli_since = 0
        self.last_t = self.ctx.clock.now()
        self.ctx.counters["snapshots"] += 1

    def after_input(self) -> None:
        """The end of an input: the entry if something changed."""
        if self.dirty and self.ctx.case is not None:
            self.write()

    def tick(self) -> None:
        """Timer: the entry every ``snapshot_every_s`` while stimuli arrive."""
        now = self.ctx.clock.now()
        if (self.ctx.case is not None and self.stimuli_since
                and now - self.last_t >= self.ctx.options.snapshot_every_s):
            self.write()
