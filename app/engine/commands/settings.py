"""Settings commands: ``settings.get`` and ``settings.set`` (validated by ``app.settings``, journaled).

Owns: those handlers. A change applies at once to every room (``Monitor.apply_settings``);
an acquisition setting reconfigures the board; a start-up-only setting is refused with
the reason.
May import: ``app.api.protocol``, ``app.settings``, ``app.format``, ``app.record.entries``,
``app.engine.board``/``limits``, ``app.engine.commands.registry``; ``app.engine.core`` for types only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.api import protocol as p
from app.engine.board import ACQUISITION_SETTINGS
from app.engine.commands.registry import command, operator, who
from app.engine.limits import PROTECTED, needs_confirmation, relaxed
from app import format as F
from app.record import entries as E
from app.settings import SCHEMA, SettingError

if TYPE_CHECKING:
    from app.engine.core import Monitor


@command("settings.get")
def settings_get(m: Monitor, req: p.Request) -> dict[str, Any]:
    """Every setting's value, with the schema (unit, range, default, meaning)."""
    schema = [{"key": s.key, "unit": s.unit, "default": s.default, "minimum": s.minimum, "maximum": s.maximum,
               "kind": s.kind.__name__, "choices": list(s.choices) if s.choices else None, "doc": s.doc,
               "range": s.describe_range(), "live": s.live} for s in SCHEMA.values()]
    return {"values": m.settings.as_dict(), "schema": schema, "profile": m.profile}


def _check(m: Monitor, key: str, value: Any) -> None:
    if key not in SCHEMA:
        raise p.ApiError(p.SETTING_REJECTED, f"settings.set: unknown setting {key!r}", setting=key)
    try:
        checked = SCHEMA[key].validate(value, "settings.set")
    except SettingError as exc:
        raise p.ApiError(p.SETTING_REJECTED, str(exc), setting=key) from None
    if not SCHEMA[key].live and checked != m.settings[key]:
        raise p.ApiError(p.SETTING_REJECTED, (
            f"setting {key}: read at start-up only (wiring, devices and link timing); change it in the "
            "configuration file and restart the monitor"), setting=key)


@command("settings.set")
def settings_set(m: Monitor, req: p.Request, changes: dict[str, Any], confirm: bool = False) -> dict[str, Any]:
    """Change settings; each change journaled with the old and new value.

    A protected limit (``app.engine.limits``: the event threshold, the alarm limits, the
    alarm signals) relaxed beyond its default, or changed while a related alarm is active,
    needs ``confirm``; without it nothing changes and the reply (``needs_confirmation``)
    names each such setting and why. Confirmed, it is journaled as such and the state
    shows it (``limits``) until it is restored."""
    if not changes:
        raise p.ApiError(p.INVALID_ARGUMENT, "settings.set: changes is empty; give {\"group.name\": value}",
                         argument="changes")
    for key, value in changes.items():
        _check(m, key, value)
    try:
        new = m.settings.with_changes(changes, "settings.set")
    except SettingError as exc:
        raise p.ApiError(p.SETTING_REJECTED, str(exc), setting=next(iter(changes))) from None
    old = m.settings
    active = [a.kind for a in m.alarms.state().alarms if a.priority != "info"]
    protected = needs_confirmation({k: new[k] for k in changes}, old, active)
    if protected and not confirm:
        raise p.ApiError(p.NEEDS_CONFIRMATION, "settings.set: " + "; ".join(x["text"] for x in protected)
                         + '. Send it again with "confirm": true to apply it.', settings=protected,
                         setting=protected[0]["setting"])
    m.apply_settings(new)
    asked = {x["setting"]: x for x in protected}
    for key in changes:
        if old[key] != new[key]:
            entry = E.setting_changed(key, old[key], new[key], who=req.client or None)
            if key in PROTECTED:
                entry.update(default=PROTECTED[key].default, relaxed=relaxed(key, new[key]),
                             confirmed=key in asked, why=asked[key]["why"] if key in asked else [])
            m.ledger.write("setting_changed", entry)
            if key in PROTECTED and (relaxed(key, new[key]) or relaxed(key, old[key])):
                _announce_limit(m, req, key, old[key], new[key], key in asked)
    operator(m, req)
    if m.board.acq_configured and any(old[k] != new[k] for k in ACQUISITION_SETTINGS):
        m.board.configure()  # the board samples and cuts epochs as the settings now say
    return {"values": {k: new[k] for k in changes}}


def _announce_limit(m: Monitor, req: p.Request, key: str, old: Any, new: Any, confirmed: bool) -> None:
    """A protected limit relaxed (further), or back towards its default: an event for people."""
    lim = PROTECTED[key]
    unit = lim.unit
    now_relaxed = relaxed(key, new)
    what = (f"{lim.word} to {F.setting_value(new, unit)} (default {F.setting_value(lim.default, unit)})"
            if now_relaxed else f"restored to {F.setting_value(new, unit)}"
            + ("" if new == lim.default else f" (default {F.setting_value(lim.default, unit)})"))
    by = f"{who(req)}" + (", confirmed" if confirmed else "")
    m.ledger.event("operator", "limit_relaxed" if now_relaxed else "limit_restored",
                   f"{F.setting_name(key)} {what}, was {F.setting_value(old, unit)} ({by})",
                   priority="low" if now_relaxed else None,
                   detail={"setting": key, "old": old, "new": new, "default": lim.default, "unit": unit,
                           "relaxed": now_relaxed, "confirmed": confirmed})
