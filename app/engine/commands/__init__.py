"""The engine's API command handlers, one module per topic, registered by name.

Owns: the topic modules (``case``, ``stimulation``, ``procedure``, ``alarms``,
``documents``, ``settings``, ``simulation``, ``state``), each registering its handlers
with ``registry.command``; importing this package registers them all. ``HANDLERS``
and ``dispatch`` are ``registry``'s.
May import: ``app.api.protocol``, ``app.settings``, ``app.model``, ``app.record.entries``,
``app.engine`` rooms; ``app.engine.core`` for types only.
"""

from app.engine.commands import alarms, case, documents, procedure, settings, simulation, state, stimulation
from app.engine.commands.registry import HANDLERS, SERVER_COMMANDS, command, dispatch

__all__ = ["HANDLERS", "SERVER_COMMANDS", "alarms", "case", "command", "dispatch", "documents", "procedure",
           "settings", "simulation", "state", "stimulation"]
