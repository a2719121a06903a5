"""Alarm commands: ``alarm.ack``, ``alarm.pause_audio``, ``alarm.reset``, ``alarm.audio_off``.

Owns: those handlers (the alarm manager journals each action through its log).
May import: ``app.api.protocol``, ``app.engine.commands.registry``; ``app.engine.core`` for types only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.api import protocol as p
from app.engine.commands.registry import command, who

if TYPE_CHECKING:
    from app.engine.core import Monitor


@command("alarm.ack")
def alarm_ack(m: Monitor, req: p.Request, alarm: str | None = None) -> dict[str, Any]:
    """Acknowledge ``alarm`` (default: the top unacknowledged one)."""
    st = m.alarms.state()
    target = alarm
    if alarm is None:
        unacked = [a for a in st.alarms if not a.acknowledged]
        target = unacked[0].id if unacked else None
    elif st.by_id(alarm) is None:
        raise p.ApiError(p.INVALID_ARGUMENT, f"alarm.ack: no alarm {alarm!r}; active: "
                         + (", ".join(a.id for a in st.alarms) or "none"), argument="alarm")
    if target is None:
        return {"alarm": None}
    ok = m.alarms.acknowledge(target, who=who(req))
    if not ok and alarm is not None:
        raise p.ApiError(p.BAD_STATE, f"alarm.ack: {alarm} is already acknowledged")
    return {"alarm": target if ok else None}


@command("alarm.pause_audio")
def alarm_pause_audio(m: Monitor, req: p.Request) -> dict[str, Any]:
    """Pause the alarm sound for ``alarms.audio_pause_s``."""
    m.alarms.pause_audio(who=who(req))
    return {"pause_remaining_s": m.alarms.state().audio.remaining_s or 0.0}


@command("alarm.reset")
def alarm_reset(m: Monitor, req: p.Request, alarm: str | None = None) -> dict[str, Any]:
    """Reset latched alarms whose condition has ended (``alarm``, or all)."""
    before = {a.id for a in m.alarms.state().alarms}
    if alarm is not None and alarm not in before:
        raise p.ApiError(p.INVALID_ARGUMENT, f"alarm.reset: no alarm {alarm!r}", argument="alarm")
    m.alarms.reset(alarm, who=who(req))
    after = {a.id for a in m.alarms.state().alarms}
    removed = sorted(before - after)
    if alarm is not None and not removed:
        raise p.ApiError(p.BAD_STATE, f"alarm.reset: {alarm} cannot be reset while its condition is present")
    return {"reset": removed}


@command("alarm.audio_off")
def alarm_audio_off(m: Monitor, req: p.Request, off: bool) -> dict[str, Any]:
    """Alarm audio off (medium and low priority, reminded), or back on."""
    if off:
        m.alarms.audio_off(who=who(req))
    else:
        m.alarms.audio_on(who=who(req))
    return {"audio": m.alarms.state().audio.mode}
