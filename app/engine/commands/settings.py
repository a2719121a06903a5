"""Settings commands: ``settings.get`` and ``settings.set`` (validated by ``app.settings``, journaled).

Owns: those handlers. A change applies at once to every room (``Monitor.apply_settings``);
an acquisition setting reconfigures the board; a start-up-only setting is refused with
the reason.
May import: ``app.api.protocol``, ``app.settings``, ``app.record.entries``,
``app.engine.board``, ``app.engine.commands.registry``; ``app.engine.core`` for types only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.api import protocol as p
from app.engine.board import ACQUISITION_SETTINGS
from app.engine.commands.registry import command, operator
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
def settings_set(m: Monitor, req: p.Request, changes: dict[str, Any]) -> dict[str, Any]:
    """Change settings; each change journaled with the old and new value."""
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
    m.apply_settings(new)
    for key in changes:
        if old[key] != new[key]:
            m.ledger.write("setting_changed", E.setting_changed(key, old[key], new[key], who=req.client or None))
    operator(m, req)
    if m.board.acq_configured and any(old[k] != new[k] for k in ACQUISITION_SETTINGS):
        m.board.configure()  # the board samples and cuts epochs as the settings now say
    return {"values": {k: new[k] for k in changes}}
