"""The alarm system: IEC 60601-1-8 alarm conditions, priorities, latching, acknowledge,
audio paused/off, reset, escalation and the alarm log.

Owns: ``catalog`` (every alarm defined as data), ``manager`` (the pure state machine with
an injected clock; the tables are in its docstring) and ``mapping`` (rule events ->
alarm conditions).
May import: the standard library, ``app.model``, ``app.settings`` and
``firmware_bridge.clock``. Never ``app.outputs``, the engine, the API or the UI: sounds,
LEDs and the buzzer read this package's state, not the other way round.
"""

from app.alarms.catalog import CATALOG, AlarmDefinition, AlarmKind, Category, Latch, definition
from app.alarms.manager import (
    AlarmManager,
    AlarmState,
    AlarmView,
    AudioMode,
    AudioView,
    LogEntry,
    NoticeView,
    alarm_id,
)
from app.alarms.mapping import RULE_EVENT_TABLE, apply_rule_event, event_key

__all__ = [
    "CATALOG",
    "RULE_EVENT_TABLE",
    "AlarmDefinition",
    "AlarmKind",
    "AlarmManager",
    "AlarmState",
    "AlarmView",
    "AudioMode",
    "AudioView",
    "Category",
    "Latch",
    "LogEntry",
    "NoticeView",
    "alarm_id",
    "apply_rule_event",
    "definition",
    "event_key",
]
