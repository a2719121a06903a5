"""Stimulation commands: ``stim.set``, ``stim.output``, ``stim.single``, ``probe.site``, ``aps.side``.

Owns: those handlers: values checked against the schema and the board's capabilities,
currents above ``stim.confirm_above_mA`` only with an explicit confirmation, no
stimulation while a failed tube check is not accepted, and the commands for the board.
May import: ``app.api.protocol``, ``app.settings``, ``app.model``, ``app.engine.stimulator``,
``app.engine.commands.registry``; ``app.engine.core`` for types only.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from app.api import protocol as p
from app.engine.commands.registry import command, operator
from app.engine.stimulator import step_site
from app.model import Side, Site, Step
from app.settings import SCHEMA
from firmware_bridge.messages import Capabilities

if TYPE_CHECKING:
    from app.engine.core import Monitor


def _range(key: str) -> tuple[float, float]:
    """The schema's range of a numeric setting."""
    spec = SCHEMA[key]
    return (float(spec.minimum) if spec.minimum is not None else -math.inf,
            float(spec.maximum) if spec.maximum is not None else math.inf)


def _check_current(output: str, current_mA: float, now_mA: float, confirm: bool, caps: Capabilities | None,
                   limit: float) -> None:
    lo, hi = _range("stim.probe_current_mA" if output == "probe" else "stim.aps_current_mA")
    if caps is not None:
        hi = min(hi, caps.max_current_uA / 1000.0)
    if current_mA < lo or current_mA > hi:
        raise p.ApiError(p.INVALID_ARGUMENT, f"stim.set: current_mA {current_mA:g} mA is out of range for the "
                         f"{output}; allowed {lo:g}-{hi:g} mA", argument="current_mA")
    if current_mA > limit + 1e-9 and not confirm and current_mA != now_mA:
        raise p.ApiError(p.NEEDS_CONFIRMATION,
                         f"stim.set: {current_mA:g} mA is above {limit:g} mA (stim.confirm_above_mA); "
                         "send it again with \"confirm\": true", limit_mA=limit, argument="current_mA")


def _check_rate(output: str, rate_hz: float, caps: Capabilities | None) -> None:
    lo, hi = _range("stim.probe_rate_hz" if output == "probe" else "stim.aps_rate_hz")
    if caps is not None:
        lo = max(lo, caps.min_rate_mHz / 1000.0)
        hi = min(hi, caps.max_rate_mHz / 1000.0)
    if rate_hz < lo or rate_hz > hi:
        raise p.ApiError(p.INVALID_ARGUMENT, f"stim.set: rate_hz {rate_hz:g} Hz is out of range for the "
                         f"{output}; allowed {lo:g}-{hi:g} Hz", argument="rate_hz")


def _check_pulse_width(pulse_width_us: int, caps: Capabilities | None) -> None:
    if caps is None:
        return
    lo, hi = caps.min_pulse_width_us, caps.max_pulse_width_us
    if not lo <= pulse_width_us <= hi:
        raise p.ApiError(p.INVALID_ARGUMENT, f"stim.set: pulse_width_us {pulse_width_us} us is out of the "
                         f"board's range; allowed {lo}-{hi} us", argument="pulse_width_us")


@command("stim.set")
def stim_set(m: Monitor, req: p.Request, output: str, current_mA: float | None = None, rate_hz: float | None = None,
             pulse_width_us: int | None = None, confirm: bool = False) -> dict[str, Any]:
    """An output's current, rate or pulse width (sent at once while it stimulates)."""
    out = m.stim.output(output)
    caps = m.board.capabilities
    if current_mA is not None:
        _check_current(output, current_mA, out.current_mA, confirm, caps, float(m.settings["stim.confirm_above_mA"]))
    if rate_hz is not None:
        _check_rate(output, rate_hz, caps)
    if pulse_width_us is not None:
        _check_pulse_width(pulse_width_us, caps)
    if current_mA is not None:
        out.current_mA = float(current_mA)
    if rate_hz is not None:
        out.rate_hz = float(rate_hz)
    if pulse_width_us is not None:
        out.pulse_width_us = int(pulse_width_us)
    operator(m, req)
    if out.on and m.case is not None:
        m.ctx.send(out.stimulate())
    return {"output": output, **out.to_json()}


@command("stim.output")
def stim_output(m: Monitor, req: p.Request, output: str, on: bool) -> dict[str, Any]:
    """Switch an output's stimulation on or off."""
    out = m.stim.output(output)
    if on:
        m.board.require_link("stim.output")
        refused = m.tube.refusal()
        if refused is not None:
            raise p.ApiError(p.BAD_STATE, f"stim.output: the tube check failed ({refused}); repeat it or accept it "
                             "with tube.override and a reason")
    out.on = bool(on)
    operator(m, req)
    m.ctx.send(out.stimulate())
    return {"output": output, **out.to_json()}


@command("stim.single")
def stim_single(m: Monitor, req: p.Request) -> dict[str, Any]:
    """One probe pulse now."""
    m.board.require_link("stim.single")
    operator(m, req)
    m.ctx.send(m.stim.probe.single())
    return {"sent": True}


@command("probe.site")
def probe_site(m: Monitor, req: p.Request, site: str, side: str, step: str | None = None) -> dict[str, Any]:
    """What the probe is on now (and the INMSG step its stimuli belong to)."""
    new_step = None if step in (None, "none") else Step(step)
    if new_step is not None and step_site(new_step) is not Site(site):
        raise p.ApiError(p.INVALID_ARGUMENT, f"probe.site: step {new_step.value} stimulates the "
                         f"{step_site(new_step).value}, not the {site}", argument="step")
    stim = m.stim
    stim.probe_site, stim.probe_side = Site(site), Side(side)
    if step is not None or new_step is None:
        stim.probe_step = new_step
    operator(m, req)
    return {"site": site, "side": side, "step": stim.probe_step.value if stim.probe_step else None}


@command("aps.side")
def aps_side(m: Monitor, req: p.Request, side: str) -> dict[str, Any]:
    """The side of the continuous vagal electrode."""
    m.stim.aps_side = Side(side)
    operator(m, req)
    return {"side": side}
