"""The stimulator as the engine commands it: two outputs and what the probe is on.

Owns: ``OutputSettings`` (one output's current, rate, pulse width, on/off, last delivered
current, and its ``Stimulate`` command) and ``Stimulator``: the hand-held probe and the
continuous vagal electrode (APS), the probe's site, side and INMSG step, the electrode's
side, the selection a stimulus of each output is attributed to, and their part of the
engine-state entry.
May import: ``app.model``, ``app.settings``, ``firmware_bridge.messages``.

Attribution: every stimulus belongs to the site, side, step and output in force when the
board *delivered* it, never to a selection made after it (an epoch reaches the engine
50-100 ms after its pulse; a site chosen meanwhile is not its site).

- With a board that speaks protocol 1.1 (``tokens_supported``), every Stimulate that is
  not STOP carries a new configuration token (``issue``), remembered with the selection
  in force when it was sent (the last ``TOKENS_KEPT`` per output). The board applies a
  Stimulate between two pulses and echoes its token in every epoch delivered with it, so
  ``selection_at`` reads the selection off the epoch's token. Changing the probe's site,
  side or step or the electrode's side while that output stimulates sends the same
  settings again with a new token (``note_selection`` says which outputs; the board desk
  sends them).
- Otherwise (a 1.0 board, an epoch without a token, a token no longer remembered) each
  selection change is kept with the engine-clock time it was made (``note_selection``),
  and the epoch's onset on the board's clock mapped to the engine clock picks the
  selection: a stimulus delivered before the change, or less than ``SELECTION_MARGIN_S``
  after it, keeps the old selection (the board-time mapping runs late by the smallest
  transport delay seen, a few milliseconds; the margin covers it, so a stimulus is never
  given a selection made after it). One thing is certain without the margin: the pulses
  of a run the engine started (a Stimulate sent to an output that was not stimulating)
  come after that command, so every change made before it is in force for them.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass, replace
from typing import Any

from app.model import Side, Site, Source, Step
from app.settings import Settings
from firmware_bridge.messages import CONFIG_TOKEN_MAX, Output, Stimulate, StimMode

_STEP_SITE = {"V": Site.VAGUS, "R": Site.RLN, "S": Site.EBSLN}
TOKENS_KEPT = 64  # configuration tokens remembered per output (the link checks the last 16)
CHANGES_KEPT = 256  # selection changes remembered per output (board-time attribution)
SELECTION_MARGIN_S = 0.01  # a stimulus this soon after a selection change keeps the old one

Selection = tuple[Site, Side, Step | None, Source]


def step_site(step: Step | str) -> Site:
    """The nerve site an INMSG step stimulates (V -> vagus, R -> RLN, S -> EBSLN)."""
    return _STEP_SITE[Step(step).value[0]]


@dataclass
class OutputSettings:
    """One stimulator output as commanded."""

    output: Output
    current_mA: float
    rate_hz: float
    pulse_width_us: int
    on: bool = False
    delivered_mA: float | None = None

    def to_json(self) -> dict[str, Any]:
        """For the state snapshot and the engine-state entry."""
        return {"on": self.on, "current_mA": round(self.current_mA, 3), "rate_hz": round(self.rate_hz, 3),
                "pulse_width_us": self.pulse_width_us,
                "delivered_mA": None if self.delivered_mA is None else round(self.delivered_mA, 3)}

    def stimulate(self) -> Stimulate:
        """The command that makes the board do what this says (continuous, or stop)."""
        mode = StimMode.CONTINUOUS if self.on else StimMode.STOP
        return Stimulate(self.output, mode, int(round(self.current_mA * 1000)), self.pulse_width_us,
                         int(round(self.rate_hz * 1000)))

    def single(self) -> Stimulate:
        """One pulse now with these parameters."""
        return Stimulate(self.output, StimMode.SINGLE, int(round(self.current_mA * 1000)), self.pulse_width_us,
                         int(round(self.rate_hz * 1000)))


class Stimulator:
    """The probe and the continuous vagal electrode (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.tokens_supported = False  # the board echoes configuration tokens (protocol 1.1)
        self._next_token = 1
        self._tokens: dict[Output, OrderedDict[int, Selection]] = {o: OrderedDict() for o in Output}
        self._changes: dict[Output, deque[tuple[float, Selection]]] = {
            o: deque(maxlen=CHANGES_KEPT) for o in Output}
        self._starts: dict[Output, deque[float]] = {o: deque(maxlen=CHANGES_KEPT) for o in Output}
        self._running: dict[Output, bool] = dict.fromkeys(Output, False)  # as last commanded
        self._stopped_at: dict[Output, float] = dict.fromkeys(Output, -math.inf)
        # the last start or stop sent to each output: engine-clock time and mode (None: none yet)
        self._train_command: dict[Output, tuple[float, StimMode | None]] = dict.fromkeys(Output, (-math.inf, None))
        self._singles: dict[Output, deque[float]] = {o: deque(maxlen=16) for o in Output}  # single pulses asked
        self.reset(settings)

    def reset(self, settings: Settings) -> None:
        """Both outputs off, everything as configured (engine start, end of a case)."""
        pw = int(settings["stim.pulse_width_us"])
        self.probe = OutputSettings(Output.PROBE, settings["stim.probe_current_mA"], settings["stim.probe_rate_hz"], pw)
        self.aps = OutputSettings(Output.APS, settings["stim.aps_current_mA"], settings["stim.aps_rate_hz"], pw)
        self.probe_site = Site.VAGUS
        self.probe_side = Side.L
        self.probe_step: Step | None = None
        self.aps_side = Side.L

    def output(self, name: str) -> OutputSettings:
        """``probe`` or ``aps``."""
        return self.probe if name == "probe" else self.aps

    def outputs(self) -> tuple[OutputSettings, OutputSettings]:
        """Both outputs."""
        return self.probe, self.aps

    def of(self, source: Source) -> OutputSettings:
        """The output a stimulus of ``source`` came from."""
        return self.probe if source is Source.PROBE else self.aps

    def on_wire(self, output: Output) -> OutputSettings:
        """The settings of the board's ``output``."""
        return self.probe if output == Output.PROBE else self.aps

    def selection(self, output: Output) -> Selection:
        """Site, side, step and source a stimulus of ``output`` would be attributed to now."""
        if output == Output.APS:
            return Site.VAGUS, self.aps_side, None, Source.APS
        step = self.probe_step
        if step is not None and step_site(step) is not self.probe_site:
            step = None
        return self.probe_site, self.probe_side, step, Source.PROBE

    def running(self, output: Output) -> bool:
        """Whether ``output`` was last commanded to stimulate continuously."""
        return self._running[Output(output)]

    def train_command(self, output: Output) -> tuple[float, StimMode | None]:
        """The last start, new settings or stop sent to ``output``: its engine-clock time
        and mode (``CONTINUOUS`` or ``STOP``); ``(-inf, None)`` before the first."""
        return self._train_command[Output(output)]

    def selection_changed_at(self, output: Output) -> float:
        """Engine-clock time the site, side or step of ``output`` last changed (``-inf``:
        never, since the engine started)."""
        hist = self._changes[Output(output)]
        return hist[-1][0] if len(hist) > 1 else -math.inf

    def singles(self, output: Output) -> tuple[float, ...]:
        """Engine-clock times of the last single pulses asked of ``output`` (a train, if
        it runs, goes on beside them)."""
        return tuple(self._singles[Output(output)])

    # -- attribution (see the module docstring)

    def note_selection(self, now: float) -> list[Output]:
        """Record the selection of each output as of engine-clock time ``now``; the outputs
        whose selection changed since the last call."""
        changed = []
        for out in Output:
            sel = self.selection(out)
            hist = self._changes[out]
            if not hist or hist[-1][1] != sel:
                if hist:
                    changed.append(out)
                hist.append((now, sel))
        return changed

    def issue(self, msg: Stimulate, now: float) -> Stimulate:
        """``msg`` on its way to the board at engine-clock time ``now``: with a new
        configuration token remembered with the selection now (STOP, and every command to
        a board without tokens, go as they are); the start of a run is remembered."""
        out = Output(msg.output)
        if msg.mode is StimMode.SINGLE:
            self._singles[out].append(now)
        else:
            self._train_command[out] = (now, msg.mode)
        if msg.mode is StimMode.STOP:
            if self._running[out]:
                self._stopped_at[out] = now
            self._running[out] = False
        elif not self._running[out]:
            # every pulse it causes comes after this (unless a pulse of the last run, mapped
            # late, could pass for one of this run: then the margin alone decides)
            if now - self._stopped_at[out] >= SELECTION_MARGIN_S:
                self._starts[out].append(now)
            self._running[out] = msg.mode is StimMode.CONTINUOUS
            if msg.mode is StimMode.SINGLE:
                # when its one pulse comes is not known (a slow board may deliver it late):
                # the next run's start vouches for nothing until a run has been stopped
                self._stopped_at[out] = math.inf
        if not self.tokens_supported or msg.mode is StimMode.STOP:
            return msg
        token = self._next_token
        self._next_token = token % CONFIG_TOKEN_MAX + 1
        known = self._tokens[msg.output]
        known[token] = self.selection(msg.output)
        while len(known) > TOKENS_KEPT:
            known.popitem(last=False)
        return replace(msg, config_token=token)

    def selection_at(self, output: Output, token: int | None, clock_t: float) -> Selection:
        """The selection a stimulus of ``output`` belongs to: by its configuration token,
        else by its onset ``clock_t`` (board time mapped to the engine clock)."""
        if token is not None:
            sel = self._tokens[Output(output)].get(token)
            if sel is not None:
                return sel
        hist = self._changes[Output(output)]
        if not hist:
            return self.selection(output)
        surely_after = clock_t - SELECTION_MARGIN_S
        for start in reversed(self._starts[Output(output)]):
            if start <= clock_t:  # the run it belongs to began with a command sent then
                surely_after = max(surely_after, start)
                break
        for t, sel in reversed(hist):
            if t <= surely_after:
                return sel
        return hist[0][1]  # before every change remembered: the oldest selection known

    def commands_on(self) -> list[Stimulate]:
        """The commands of the outputs that should be stimulating (after a reconnection)."""
        return [o.stimulate() for o in self.outputs() if o.on]

    def stop(self) -> list[Stimulate]:
        """Stop both outputs now (they stay marked off)."""
        for o in self.outputs():
            o.on = False
        return [Stimulate(Output.PROBE, StimMode.STOP), Stimulate(Output.APS, StimMode.STOP)]

    def to_json(self) -> dict[str, Any]:
        """The stimulator's part of the engine-state entry."""
        return {"probe": self.probe.to_json(), "aps": self.aps.to_json(),
                "probe_site": self.probe_site.value, "probe_side": self.probe_side.value,
                "probe_step": self.probe_step.value if self.probe_step else None, "aps_side": self.aps_side.value}

    def restore(self, d: dict[str, Any]) -> None:
        """Load ``to_json()`` (crash resume)."""
        for out, key in ((self.probe, "probe"), (self.aps, "aps")):
            o = d[key]
            out.current_mA, out.rate_hz = float(o["current_mA"]), float(o["rate_hz"])
            out.pulse_width_us, out.on = int(o["pulse_width_us"]), bool(o["on"])
        self.probe_site, self.probe_side = Site(d["probe_site"]), Side(d["probe_side"])
        self.probe_step = Step(d["probe_step"]) if d.get("probe_step") else None
        self.aps_side = Side(d["aps_side"])
