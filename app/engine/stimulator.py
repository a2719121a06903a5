"""The stimulator as the engine commands it: two outputs and what the probe is on.

Owns: ``OutputSettings`` (one output's current, rate, pulse width, on/off, last delivered
current, and its ``Stimulate`` command) and ``Stimulator``: the hand-held probe and the
continuous vagal electrode (APS), the probe's site, side and INMSG step, the electrode's
side, the selection a stimulus of each output is attributed to, and their part of the
engine-state entry.
May import: ``app.model``, ``app.settings``, ``firmware_bridge.messages``.

Seam for stimulus attribution by board time: ``selection(output)`` is the one place that
says which site, side and step a stimulus belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.model import Side, Site, Source, Step
from app.settings import Settings
from firmware_bridge.messages import Output, Stimulate, StimMode

_STEP_SITE = {"V": Site.VAGUS, "R": Site.RLN, "S": Site.EBSLN}


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

    def selection(self, output: Output) -> tuple[Site, Side, Step | None, Source]:
        """Site, side, step and source a stimulus of ``output`` is attributed to now."""
        if output == Output.APS:
            return Site.VAGUS, self.aps_side, None, Source.APS
        step = self.probe_step
        if step is not None and step_site(step) is not self.probe_site:
            step = None
        return self.probe_site, self.probe_side, step, Source.PROBE

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
