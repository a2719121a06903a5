"""The tube check as the engine runs it: impedances from the board, then breathing.

Owns: ``TubeDesk``: the board's impedance result made into a tube check (passed or
failed against ``tube.*``, journaled, announced), its breathing-variation window fed with
free-running EMG (stimulus windows blanked) and judged when complete or when the stream
stops, the operator's acceptance of a failed check (``tube.override``), whether a failed
check blocks stimulation, and the check made while no case is open, which the next case
takes over only as ``app.engine.case_state`` says (``PRE_CASE_TUBE_CHECK_S``).
May import: ``app.engine.breathing``/``case_state``/``context``/``ledger``/``timebase``,
``app.analysis.breathing`` (reasons), ``app.record.entries``, ``firmware_bridge.messages``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from app.analysis.breathing import REASONS
from app.engine.breathing import BreathingCheck, breathing_message
from app.engine.case_state import PRE_CASE_TUBE_CHECK_S, CaseState, TubeCheck
from app.engine.context import EngineContext
from app.engine.ledger import Ledger
from app.engine.timebase import TimeBase
from app.record import entries as E
from firmware_bridge.messages import Electrode, ImpedanceResult


def _ago(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60.0:.0f} min"


class TubeDesk:
    """The tube check (see the module docstring)."""

    def __init__(self, ctx: EngineContext, time: TimeBase, ledger: Ledger, changed: Callable[[], None]) -> None:
        self.ctx = ctx
        self.time = time
        self.ledger = ledger
        self._changed = changed  # the engine-state entry is due
        self.waiting: TubeCheck | None = None  # made while no case is open, for the next case

    @property
    def current(self) -> TubeCheck | None:
        """The open case's check; with no case open, the one made since the last case closed."""
        case = self.ctx.case
        return case.tube if case is not None else self.waiting

    # -- the measurement

    def measured(self, res: ImpedanceResult) -> None:
        """The board's impedances are back: the check's verdict now, its breathing window from now."""
        st = self.ctx.settings
        now = self.ctx.clock.now()
        case = self.ctx.case
        imp = {Electrode(k).name: int(v) for k, v in res.impedances_ohm}
        breathing = BreathingCheck(st)
        breathing.start(now)  # then a window of free-running EMG for the breathing variation
        payload = E.tube_check(imp, st["tube.max_impedance_kohm"], st["tube.max_imbalance_kohm"],
                               breathing_variation=breathing.json(now),
                               override=case.tube_override if case is not None else None)
        if payload["passed"]:
            if case is not None:
                case.tube_override = None
            payload["override"] = None  # a passing check needs none (an earlier override stays in its own entry)
        check = TubeCheck(payload, now, breathing)
        if case is not None:
            case.tube = check
        else:
            self.waiting = check
        self.ledger.write("tube_check", payload)
        self.ledger.event("procedure", "tube_check",
                          ("Tube check passed: " if payload["passed"] else "Tube check FAILED: ") + payload["message"],
                          priority=None if payload["passed"] else "low", detail=payload)
        self._changed()

    def feed(self, uv: np.ndarray, t0: float, rate: float) -> None:
        """A free-running EMG block starting at case time ``t0``."""
        check = self.current
        if check is not None and check.breathing.active:
            done = check.breathing.feed(uv, self.time.origin + t0, rate)
            if done is not None:
                self._done(check, done)

    def blank(self, t_stim: float) -> None:
        """A stimulus at case time ``t_stim``: its window is not baseline EMG."""
        check = self.current
        if check is not None and check.breathing.active:
            t = self.time.origin + t_stim
            check.breathing.blank(t - 0.001, t + float(self.ctx.settings["analysis.window_ms"]) / 1000.0 + 0.005)

    def poll(self) -> None:
        """Timer: a window whose stream stopped is judged on what there is."""
        check = self.current
        if check is not None:
            bv = check.breathing.poll(self.ctx.clock.now())
            if bv is not None:
                self._done(check, bv)

    def settings_changed(self) -> None:
        """New settings: a window being recorded starts again under them."""
        check = self.current
        if check is not None:
            check.breathing.settings_changed(self.ctx.settings, self.ctx.clock.now())

    def _done(self, check: TubeCheck, bv: dict[str, Any]) -> None:
        """The breathing window is over: the check, its journal entry, an event."""
        text, missing = breathing_message(bv)
        check.result = {**check.result, "breathing_variation": bv}
        self.ledger.write("tube_check", check.result)
        self.ledger.event("procedure", "breathing_variation", text, priority="info" if missing else None,
                          detail={"breathing_variation": bv})
        self._changed()

    # -- the operator

    def override(self, case: CaseState, who: str, reason: str) -> bool:
        """Accept the case's failed check (False: there is no failed check to accept)."""
        check = case.tube
        if check is None or check.result.get("passed"):
            return False
        case.tube_override = {"who": who, "reason": reason}
        check.result = {**check.result, "override": case.tube_override}
        self.ledger.write("tube_check", check.result)
        return True

    def refusal(self) -> str | None:
        """Why stimulation must not start (a failed check not accepted), or None."""
        case = self.ctx.case
        check = self.current
        if check is None or check.result.get("passed") or (case is not None and case.tube_override is not None):
            return None
        return str(check.result.get("message"))

    # -- the case's life

    def case_opened(self, case: CaseState) -> None:
        """The new case takes over the check made since the last case closed, if recent enough."""
        check, self.waiting = self.waiting, None
        if check is None:
            return
        age = self.ctx.clock.now() - check.t_clock
        if age > PRE_CASE_TUBE_CHECK_S:
            self.ledger.event("procedure", "tube_check_expired",
                              f"the tube check made {_ago(age)} before the case opened is not used for it: "
                              "repeat the tube check", priority="info")
            return
        case.tube = check
        self.ledger.write("tube_check", {**check.result,
                                         "message": f"{check.result['message']} (measured {_ago(age)} "
                                                    "before the case opened)"})

    def case_closing(self, case: CaseState) -> None:
        """The case closes: a breathing window still running is not measured (journaled)."""
        check = case.tube
        if check is not None and check.breathing.active:
            bv = check.breathing.cancel(REASONS["interrupted_restart"])
            if bv is not None:
                self._done(check, bv)
