"""Virtual-board control: ``sim.control`` (refused on a real board before it gets here).

Owns: that handler. May import: ``app.api.protocol``, ``app.engine.commands.registry``,
``firmware_bridge.messages``; ``app.engine.core`` for types only.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from app.api import protocol as p
from app.engine.commands.registry import command, operator
from firmware_bridge.messages import SimControl

if TYPE_CHECKING:
    from app.engine.core import Monitor


@command("sim.control")
def sim_control(m: Monitor, req: p.Request, command: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    """A command for the virtual board (probe contact, traction, cautery, ...)."""
    m.board.require_link("sim.control")
    try:
        text = json.dumps(args or {})
    except (TypeError, ValueError) as exc:
        raise p.ApiError(p.INVALID_ARGUMENT, f"sim.control: args cannot be sent ({exc})", argument="args") from None
    operator(m, req, action="sim.control", detail={"command": command, "args": args or {}})
    m.ctx.send(SimControl(command, text))
    return {"sent": True}
