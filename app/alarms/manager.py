"""The alarm manager: a pure state machine for alarm conditions, operator actions and audio.

Owns: ``AlarmManager``, its immutable state view (``AlarmState``, ``AlarmView``,
``AudioView``, ``NoticeView``) and the alarm log (``LogEntry``).
May import: the standard library, ``app.model``, ``app.settings``, ``app.alarms.catalog``
and ``firmware_bridge.clock``.

No threads, timers or clocks of its own: time is read from the injected clock when a
method is called, and everything that happens *because time passed* (pause expiry,
escalation, audio-off reminders) happens in ``tick()``. Every transition is appended to
the log and handed to ``on_log`` (the engine journals it). Public methods take an
internal re-entrant lock, so an API thread and the engine loop may both call in.

Per-alarm states (``A`` = condition present, ``K`` = acknowledged)::

    ACTIVE        A, not K   sounds            shown
    ACKED         A, K       silent            shown
    LATCHED       not A, not K  sounds         shown ("condition ended")
    LATCHED_ACKED not A, K   silent            shown until reset (latch until_reset only)
    (absent)

| from           | event                | guard                         | to             | log                         |
|----------------|----------------------|-------------------------------|----------------|-----------------------------|
| absent         | raise_condition      | not momentary                 | ACTIVE         | raised                      |
| absent         | raise_condition      | momentary                     | LATCHED        | raised                      |
| ACTIVE, ACKED  | raise_condition      |                               | unchanged      | (none: same episode)        |
| LATCHED        | raise_condition      |                               | ACTIVE [1]     | re_raised                   |
| LATCHED_ACKED  | raise_condition      |                               | ACTIVE [1]     | re_raised (sounds again)    |
| ACTIVE         | clear_condition      | latch none                    | absent         | cleared                     |
| ACTIVE         | clear_condition      | latch until_ack / until_reset | LATCHED        | condition_ended             |
| ACKED          | clear_condition      | latch none / until_ack        | absent         | cleared                     |
| ACKED          | clear_condition      | latch until_reset             | LATCHED_ACKED  | condition_ended             |
| LATCHED(_ACKED)| clear_condition      |                               | unchanged      | (none)                      |
| ACTIVE         | acknowledge          |                               | ACKED          | acknowledged                |
| LATCHED        | acknowledge          | latch until_ack               | absent         | acknowledged, removed       |
| LATCHED        | acknowledge          | latch until_reset             | LATCHED_ACKED  | acknowledged                |
| ACKED, L._ACKED| acknowledge          |                               | unchanged      | refused                     |
| LATCHED(_ACKED)| reset                |                               | absent         | reset                       |
| ACTIVE, ACKED  | reset                |                               | unchanged      | refused (condition present) |
| ACTIVE,LATCHED | tick                 | unacknowledged >= escalation_s| same, escalated| escalated                   |

[1] LATCHED for a momentary kind (the condition ends again at once). ``since`` (start of
the episode) is kept. From LATCHED the unacknowledged period simply continues (the
escalation timer is not reset by a flapping condition; a pause that covered it still
does); from LATCHED_ACKED a new unacknowledged period starts now, so it sounds again,
breaks through a running pause and its escalation timer starts afresh.

Escalation: medium/low move to the catalogue's ``escalate_to`` priority; a high alarm
stays high with ``escalated`` set (the annunciator then plays it at full volume).
Acknowledging ends the escalation (the alarm returns to its original priority).

Audio states (one for the whole alarm system)::

| from          | event        | guard                           | to                 | log                    |
|---------------|--------------|---------------------------------|--------------------|------------------------|
| normal        | pause_audio  |                                 | paused(until)      | audio_paused           |
| paused        | pause_audio  |                                 | paused (restarted) | audio_paused           |
| off           | pause_audio  |                                 | paused             | audio_paused (ends off)|
| paused        | tick         | now >= until                    | normal             | audio_pause_expired    |
| normal,paused | audio_off    |                                 | off                | audio_off              |
| paused, off   | audio_on     |                                 | normal             | audio_on               |
| off           | tick         | reminder_s since the last one   | off                | audio_reminder         |
| any           | refused op   | (e.g. audio_on when normal)     | unchanged          | refused                |

Which alarms sound (``AlarmState.sounding``): the first, in display order, of the
alarms that are unacknowledged (ACTIVE or LATCHED), not info, and not silenced, where

- *audio paused* silences the alarms whose unacknowledged period began at or before the
  pause: a condition that starts (or comes back) during the pause breaks through;
- *audio off* silences medium and low priority only. **High priority cannot be turned
  off**: it keeps sounding through audio off and can only be paused (time-limited, with
  a visible countdown) or acknowledged. Audio off is indefinite, shown persistently in
  the state, and ``tick()`` issues a reminder every ``alarms.audio_off_reminder_s``.

Display order: current priority (high first), then unacknowledged before acknowledged,
then oldest first (``since``), then creation order.

Settings read: ``alarms.audio_pause_s``, ``alarms.escalation_s``,
``alarms.audio_off_reminder_s``.

Crash resume (``to_state``/``restore``): alarms come back with their acknowledgement,
latch and escalation. Given ``shift`` (how far the new clock's reading of the same moment
lies from the old clock's: the engine knows it from the case clock), every time comes back
as it was: an alarm raised at case time 9.5 s still shows 9.5 s, its acknowledgement time
and its unacknowledged period are kept, and an audio pause still running is restored with
its original end (never longer); one that ended while the engine was away is over. Without
``shift`` (an older snapshot) the ages are kept relative to the new clock and the pause is
not restored. Audio off is never restored: after a restart the alarm audio is back on
(fail safe; the restored entry of the log says what it was). An unacknowledged alarm saved
without its unacknowledged time counts as unacknowledged since its episode began (it sounds
and escalates; fail safe), and an acknowledged one has no unacknowledged time.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable, Mapping

from app.alarms.catalog import (
    CATALOG,
    PRIORITY_RANK,
    AlarmDefinition,
    AlarmKind,
    Category,
    Latch,
    check_catalog,
)
from app.model import Priority
from app.settings import Settings
from firmware_bridge.clock import Clock

STATE_VERSION = 1
_MAX_LOG = 20000
_MAX_NOTICES = 50


class AudioMode:
    """The alarm audio modes: normal, paused (for ``alarms.audio_pause_s``) or off."""

    NORMAL = "normal"
    PAUSED = "paused"
    OFF = "off"


# ----------------------------------------------------------------------------- views


@dataclass(frozen=True)
class LogEntry:
    """One line of the alarm log."""

    t: float  # clock time (seconds)
    alarm_id: str | None  # None for audio-state transitions
    transition: str
    who: str
    kind: str | None = None
    priority: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "t": round(self.t, 6),
            "alarm_id": self.alarm_id,
            "transition": self.transition,
            "who": self.who,
            "kind": self.kind,
            "priority": self.priority,
            "detail": _plain(self.detail),
        }


@dataclass(frozen=True)
class AlarmView:
    """One alarm as the state, the UI and the record show it."""

    id: str
    kind: str
    key: str
    seq: int
    category: str
    priority: str  # current (after escalation)
    original_priority: str
    title: str
    message: str
    action: str
    since: float  # start of the episode
    unacknowledged_since: float | None
    latch: str
    latched: bool  # condition ended, held by the latch
    condition_active: bool
    acknowledged: bool
    acknowledged_by: str | None
    escalated: bool
    audible: bool  # would sound now (not acknowledged, not silenced)
    detail: Mapping[str, Any] = field(default_factory=dict)
    acknowledged_at: float | None = None  # clock time of the acknowledgement

    def to_json(self) -> dict[str, Any]:
        d = {name: getattr(self, name) for name in self.__dataclass_fields__}
        d["since"] = round(self.since, 6)
        if self.unacknowledged_since is not None:
            d["unacknowledged_since"] = round(self.unacknowledged_since, 6)
        if self.acknowledged_at is not None:
            d["acknowledged_at"] = round(self.acknowledged_at, 6)
        d["detail"] = _plain(self.detail)
        return d


@dataclass(frozen=True)
class AudioView:
    """The alarm audio mode as the state and the UI show it."""

    mode: str  # normal | paused | off
    remaining_s: float | None  # paused: countdown; otherwise None
    since: float | None  # when the current mode began (None: normal since start)
    by: str | None
    reminders: int  # audio-off reminders issued so far (counter; the annunciator plays one per step)
    next_reminder_in_s: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "remaining_s": None if self.remaining_s is None else round(self.remaining_s, 3),
            "since": None if self.since is None else round(self.since, 6),
            "by": self.by,
            "reminders": self.reminders,
            "next_reminder_in_s": None
            if self.next_reminder_in_s is None
            else round(self.next_reminder_in_s, 3),
        }


@dataclass(frozen=True)
class NoticeView:
    """An information signal (never sounded as an alarm) as the UI shows it."""

    t: float
    kind: str
    key: str
    title: str
    message: str
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "t": round(self.t, 6),
            "kind": self.kind,
            "key": self.key,
            "title": self.title,
            "message": self.message,
            "detail": _plain(self.detail),
        }


@dataclass(frozen=True)
class AlarmState:
    """Everything the UI, the annunciator and the API need, frozen at one instant."""

    t: float
    alarms: tuple[AlarmView, ...]  # display order
    audio: AudioView
    sounding: str | None  # priority that should sound now, or None
    sounding_id: str | None
    sounding_escalated: bool
    notices: tuple[NoticeView, ...]  # newest last

    @property
    def top(self) -> AlarmView | None:
        return self.alarms[0] if self.alarms else None

    def present(self, priority: Priority | str) -> tuple[AlarmView, ...]:
        p = Priority(priority).value
        return tuple(a for a in self.alarms if a.priority == p)

    def by_id(self, alarm_id: str) -> AlarmView | None:
        for a in self.alarms:
            if a.id == alarm_id:
                return a
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "t": round(self.t, 6),
            "alarms": [a.to_json() for a in self.alarms],
            "audio": self.audio.to_json(),
            "sounding": self.sounding,
            "sounding_id": self.sounding_id,
            "sounding_escalated": self.sounding_escalated,
            "notices": [n.to_json() for n in self.notices],
        }


# ----------------------------------------------------------------------------- internals


@dataclass
class _Alarm:
    id: str
    kind: AlarmKind
    key: str
    seq: int
    definition: AlarmDefinition
    priority: Priority
    message: str
    detail: dict[str, Any]
    since: float
    unack_since: float | None
    condition_active: bool
    acknowledged: bool = False
    acknowledged_by: str | None = None
    escalated: bool = False
    acknowledged_at: float | None = None

    def state_name(self) -> str:
        if self.condition_active:
            return "ACKED" if self.acknowledged else "ACTIVE"
        return "LATCHED_ACKED" if self.acknowledged else "LATCHED"


def alarm_id(kind: AlarmKind | str, key: str = "") -> str:
    """The id of the alarm for ``kind`` and ``key``: ``"loss_of_signal:VAGUS-L"``."""
    k = AlarmKind(kind).value
    return f"{k}:{key}" if key else k


def _plain(value: Any) -> Any:
    """A JSON-safe copy of ``value`` (enums become their values, tuples lists)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "value") and isinstance(value.value, (str, int)):
        return value.value
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


# ----------------------------------------------------------------------------- manager


class AlarmManager:
    """The alarm state machine (see the module docstring for the tables)."""

    def __init__(
        self,
        clock: Clock,
        settings: Settings | None = None,
        on_log: Callable[[LogEntry], None] | None = None,
        catalog: Mapping[AlarmKind, AlarmDefinition] = CATALOG,
    ) -> None:
        check_catalog(catalog)
        self._clock = clock
        self._catalog = catalog
        self._on_log = on_log
        self._lock = threading.RLock()
        self._alarms: dict[str, _Alarm] = {}
        self._seq = 0
        self._log: deque[LogEntry] = deque(maxlen=_MAX_LOG)
        self._notices: deque[NoticeView] = deque(maxlen=_MAX_NOTICES)
        self._audio_mode = AudioMode.NORMAL
        self._audio_since: float | None = None
        self._audio_by: str | None = None
        self._pause_until: float | None = None
        self._pause_duration = 0.0
        self._last_reminder: float | None = None  # read only while audio is off: set by audio_off
        self._reminders = 0
        self.update_settings(settings or Settings())

    # -- configuration -----------------------------------------------------------------

    def update_settings(self, settings: Settings) -> None:
        with self._lock:
            self._pause_s = float(settings["alarms.audio_pause_s"])
            self._escalation_s = float(settings["alarms.escalation_s"])
            self._reminder_s = float(settings["alarms.audio_off_reminder_s"])

    @property
    def log(self) -> tuple[LogEntry, ...]:
        with self._lock:
            return tuple(self._log)

    # -- conditions ----------------------------------------------------------------------

    def _definition(self, kind: AlarmKind | str) -> AlarmDefinition:
        try:
            return self._catalog[AlarmKind(kind)]
        except (ValueError, KeyError):
            known = ", ".join(k.value for k in self._catalog)
            raise ValueError(f"unknown alarm kind {kind!r}; known kinds: {known}") from None

    def raise_condition(
        self,
        kind: AlarmKind | str,
        key: str = "",
        message: str | None = None,
        detail: Mapping[str, Any] | None = None,
        who: str = "engine",
    ) -> str:
        """The condition ``kind`` (instance ``key``, e.g. a side) is present.

        Returns the alarm id. An info kind is recorded as a notice instead (never sounds).
        """
        d = self._definition(kind)
        key = str(key)
        if d.is_info:
            self.notify(d.kind, key, message=message, detail=detail, who=who)
            return alarm_id(d.kind, key)
        with self._lock:
            now = self._clock.now()
            aid = alarm_id(d.kind, key)
            a = self._alarms.get(aid)
            text = message or d.message
            det = dict(detail or {})
            if a is None:
                self._seq += 1
                a = _Alarm(
                    id=aid, kind=d.kind, key=key, seq=self._seq, definition=d,
                    priority=d.priority, message=text, detail=det, since=now,
                    unack_since=now, condition_active=not d.momentary,
                )
                self._alarms[aid] = a
                self._emit(now, a, "raised", who, {"message": text, **det})
                return aid
            if a.condition_active:
                # Same episode still running: keep the newest wording and detail, no log.
                a.message, a.detail = text, det
                return aid
            previous = a.state_name()
            a.condition_active = not d.momentary
            a.message, a.detail = text, det
            if a.acknowledged:
                # A new unacknowledged period: sounds again, breaks through a pause.
                a.unack_since = now
                a.escalated = False
            a.acknowledged = False
            a.acknowledged_by = None
            a.acknowledged_at = None
            self._emit(now, a, "re_raised", who, {"from": previous, "message": text, **det})
            return aid

    def clear_condition(
        self,
        kind: AlarmKind | str,
        key: str = "",
        who: str = "engine",
        detail: Mapping[str, Any] | None = None,
    ) -> bool:
        """The condition ended. Returns True when something changed."""
        d = self._definition(kind)
        if d.is_info:
            return False
        with self._lock:
            now = self._clock.now()
            a = self._alarms.get(alarm_id(d.kind, str(key)))
            if a is None or not a.condition_active:
                return False
            a.condition_active = False
            det = dict(detail or {})
            if d.latch is Latch.NONE or (d.latch is Latch.UNTIL_ACK and a.acknowledged):
                del self._alarms[a.id]
                self._emit(now, a, "cleared", who, det)
            else:
                self._emit(now, a, "condition_ended", who, det)
            return True

    def notify(
        self,
        kind: AlarmKind | str,
        key: str = "",
        message: str | None = None,
        detail: Mapping[str, Any] | None = None,
        who: str = "engine",
    ) -> NoticeView:
        """Record an information notice (shown and logged, never sounded)."""
        d = self._definition(kind)
        with self._lock:
            now = self._clock.now()
            n = NoticeView(now, d.kind.value, str(key), d.title, message or d.message, dict(detail or {}))
            self._notices.append(n)
            self._emit_raw(
                LogEntry(now, alarm_id(d.kind, str(key)), "notice", who, d.kind.value,
                         d.priority.value, {"message": n.message, **n.detail})
            )
            return n

    # -- operator actions ----------------------------------------------------------------

    def acknowledge(self, alarm_id: str | None = None, who: str = "operator") -> bool:
        """Acknowledge ``alarm_id`` or, when None, the top unacknowledged alarm."""
        with self._lock:
            now = self._clock.now()
            if alarm_id is None:
                candidates = [a for a in self._ordered() if not a.acknowledged]
                if not candidates:
                    self._refuse(now, None, "acknowledge", who, "no unacknowledged alarm")
                    return False
                a = candidates[0]
            else:
                found = self._alarms.get(alarm_id)
                if found is None:
                    self._refuse(now, alarm_id, "acknowledge", who, "no such alarm")
                    return False
                a = found
                if a.acknowledged:
                    self._refuse(now, a.id, "acknowledge", who, "already acknowledged")
                    return False
            det: dict[str, Any] = {"from": a.state_name()}
            if a.escalated:
                det["escalation_ended"] = a.priority.value
            a.acknowledged = True
            a.acknowledged_by = who
            a.acknowledged_at = now
            a.unack_since = None
            a.escalated = False
            a.priority = a.definition.priority
            self._emit(now, a, "acknowledged", who, det)
            if not a.condition_active and a.definition.latch is not Latch.UNTIL_RESET:
                del self._alarms[a.id]
                self._emit(now, a, "removed", who, {"reason": "acknowledged after its condition ended"})
            return True

    def reset(self, alarm_id: str | None = None, who: str = "operator") -> int:
        """Alarm reset: remove latched alarms whose condition has ended.

        ``alarm_id`` None resets every such alarm. Returns how many were removed.
        """
        with self._lock:
            now = self._clock.now()
            if alarm_id is None:
                targets = [a for a in self._ordered() if not a.condition_active]
                if not targets:
                    self._refuse(now, None, "reset", who, "no alarm whose condition has ended")
                    return 0
            else:
                a = self._alarms.get(alarm_id)
                if a is None:
                    self._refuse(now, alarm_id, "reset", who, "no such alarm")
                    return 0
                if a.condition_active:
                    self._refuse(now, a.id, "reset", who, "condition still present")
                    return 0
                targets = [a]
            for a in targets:
                del self._alarms[a.id]
                self._emit(now, a, "reset", who, {"from": a.state_name()})
            return len(targets)

    def pause_audio(self, who: str = "operator", seconds: float | None = None) -> bool:
        """Audio paused for ``seconds`` (default ``alarms.audio_pause_s``)."""
        with self._lock:
            now = self._clock.now()
            duration = self._pause_s if seconds is None else float(seconds)
            if not 0 < duration <= self._pause_s:
                self._refuse(
                    now, None, "pause_audio", who,
                    f"pause of {duration:g} s outside 0-{self._pause_s:g} s (alarms.audio_pause_s)",
                )
                return False
            previous = self._audio_mode
            self._audio_mode = AudioMode.PAUSED
            self._audio_since = now
            self._audio_by = who
            self._pause_until = now + duration
            self._pause_duration = duration
            self._emit_raw(
                LogEntry(now, None, "audio_paused", who,
                         detail={"from": previous, "seconds": duration, "until": now + duration})
            )
            return True

    def audio_off(self, who: str = "operator") -> bool:
        """Audio off, indefinitely, for medium and low priority (high keeps sounding)."""
        with self._lock:
            now = self._clock.now()
            if self._audio_mode == AudioMode.OFF:
                self._refuse(now, None, "audio_off", who, "audio is already off")
                return False
            previous = self._audio_mode
            self._audio_mode = AudioMode.OFF
            self._audio_since = now
            self._audio_by = who
            self._pause_until = None
            self._last_reminder = now
            high = [a.id for a in self._alarms.values() if a.priority is Priority.HIGH]
            self._emit_raw(
                LogEntry(now, None, "audio_off", who,
                         detail={"from": previous, "high_priority_still_sounds": True,
                                 "high_alarms_present": high})
            )
            return True

    def audio_on(self, who: str = "operator") -> bool:
        """End audio paused or audio off."""
        with self._lock:
            now = self._clock.now()
            if self._audio_mode == AudioMode.NORMAL:
                self._refuse(now, None, "audio_on", who, "audio is already on")
                return False
            previous = self._audio_mode
            self._set_normal(now, who)
            self._emit_raw(LogEntry(now, None, "audio_on", who, detail={"from": previous}))
            return True

    def _set_normal(self, now: float, who: str) -> None:
        self._audio_mode = AudioMode.NORMAL
        self._audio_since = now
        self._audio_by = who
        self._pause_until = None

    # -- time ----------------------------------------------------------------------------

    def tick(self) -> None:
        """Apply everything that is due because time passed."""
        with self._lock:
            now = self._clock.now()
            if self._audio_mode == AudioMode.PAUSED and self._pause_until is not None:
                if now >= self._pause_until:
                    until = self._pause_until
                    self._set_normal(now, "timer")
                    self._emit_raw(LogEntry(now, None, "audio_pause_expired", "timer", detail={"until": until}))
            for a in self._ordered():
                esc = a.definition.escalate_to
                if (
                    esc is not None
                    and not a.acknowledged
                    and not a.escalated
                    and a.unack_since is not None
                    and now - a.unack_since >= self._escalation_s
                ):
                    before = a.priority
                    a.priority = esc
                    a.escalated = True
                    self._emit(now, a, "escalated", "timer", {
                        "from_priority": before.value, "to_priority": esc.value,
                        "louder": esc is before, "unacknowledged_s": round(now - a.unack_since, 3),
                    })
            if self._audio_mode == AudioMode.OFF and self._last_reminder is not None:
                if now - self._last_reminder >= self._reminder_s:
                    self._last_reminder = now
                    self._reminders += 1
                    self._emit_raw(LogEntry(now, None, "audio_reminder", "timer",
                                            detail={"audio_off_since": self._audio_since,
                                                    "reminder": self._reminders}))

    # -- views ---------------------------------------------------------------------------

    def _ordered(self) -> list[_Alarm]:
        return sorted(
            self._alarms.values(),
            key=lambda a: (PRIORITY_RANK[a.priority], a.acknowledged, a.since, a.seq),
        )

    def _audible(self, a: _Alarm) -> bool:
        if a.unack_since is None:  # acknowledged (an info kind never becomes an alarm)
            return False
        if self._audio_mode == AudioMode.PAUSED and self._audio_since is not None:
            if a.unack_since <= self._audio_since:
                return False
        if self._audio_mode == AudioMode.OFF and a.priority is not Priority.HIGH:
            return False
        return True

    def state(self) -> AlarmState:
        with self._lock:
            now = self._clock.now()
            views = []
            sounding: _Alarm | None = None
            for a in self._ordered():
                audible = self._audible(a)
                if audible and sounding is None:
                    sounding = a
                views.append(
                    AlarmView(
                        id=a.id, kind=a.kind.value, key=a.key, seq=a.seq,
                        category=a.definition.category.value, priority=a.priority.value,
                        original_priority=a.definition.priority.value,
                        title=a.definition.title, message=a.message, action=a.definition.action,
                        since=a.since, unacknowledged_since=a.unack_since,
                        latch=a.definition.latch.value,
                        latched=not a.condition_active, condition_active=a.condition_active,
                        acknowledged=a.acknowledged, acknowledged_by=a.acknowledged_by,
                        escalated=a.escalated, audible=audible, detail=dict(a.detail),
                        acknowledged_at=a.acknowledged_at,
                    )
                )
            remaining = None
            if self._audio_mode == AudioMode.PAUSED and self._pause_until is not None:
                remaining = min(self._pause_duration, max(0.0, self._pause_until - now))
            next_rem = None
            if self._audio_mode == AudioMode.OFF and self._last_reminder is not None:
                next_rem = max(0.0, self._last_reminder + self._reminder_s - now)
            audio = AudioView(self._audio_mode, remaining, self._audio_since, self._audio_by,
                              self._reminders, next_rem)
            return AlarmState(
                t=now,
                alarms=tuple(views),
                audio=audio,
                sounding=sounding.priority.value if sounding else None,
                sounding_id=sounding.id if sounding else None,
                sounding_escalated=bool(sounding and sounding.escalated),
                notices=tuple(self._notices),
            )

    # -- crash resume --------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """A JSON-safe snapshot for crash resume: clock times (``clock`` is the reading at
        the save) and, for older readers, ages."""
        with self._lock:
            now = self._clock.now()
            return {
                "version": STATE_VERSION,
                "clock": now,
                "seq": self._seq,
                "reminders": self._reminders,
                "alarms": [
                    {
                        "kind": a.kind.value, "key": a.key, "seq": a.seq,
                        "priority": a.priority.value, "message": a.message,
                        "detail": _plain(a.detail),
                        "age_s": now - a.since,
                        "unack_age_s": None if a.unack_since is None else now - a.unack_since,
                        "ack_age_s": None if a.acknowledged_at is None else now - a.acknowledged_at,
                        "since": a.since, "unack_since": a.unack_since, "acknowledged_at": a.acknowledged_at,
                        "condition_active": a.condition_active,
                        "acknowledged": a.acknowledged, "acknowledged_by": a.acknowledged_by,
                        "escalated": a.escalated,
                    }
                    for a in self._ordered()
                ],
                "notices": [
                    {**n.to_json(), "age_s": now - n.t} for n in self._notices
                ],
                "audio_mode_at_save": self._audio_mode,
                "audio": {"mode": self._audio_mode, "since": self._audio_since, "by": self._audio_by,
                          "until": self._pause_until, "duration": self._pause_duration},
            }

    def restore(self, data: Mapping[str, Any], who: str = "restore", shift: float | None = None) -> None:
        """Load a ``to_state()`` snapshot. ``shift``: new clock reading minus old clock reading
        of the same moment; with it every time is kept (see the module docstring)."""
        with self._lock:
            now = self._clock.now()
            exact = shift is not None and isinstance(data.get("clock"), (int, float))

            def at(row: Mapping[str, Any], name: str, age: str) -> float | None:
                if exact and name in row:
                    value = row[name]
                    return None if value is None else min(now, float(value) + float(shift or 0.0))
                return None if row.get(age) is None else now - float(row[age])

            try:
                if data.get("version") != STATE_VERSION:
                    raise ValueError(f"version {data.get('version')!r}, expected {STATE_VERSION}")
                alarms: dict[str, _Alarm] = {}
                for row in data["alarms"]:
                    d = self._definition(row["kind"])
                    if d.is_info:
                        raise ValueError(f"info kind {d.kind.value} cannot be an active alarm")
                    since = float(at(row, "since", "age_s"))  # type: ignore[arg-type]
                    acknowledged = bool(row["acknowledged"])
                    unack_since = at(row, "unack_since", "unack_age_s")
                    if not acknowledged and unack_since is None:
                        # a snapshot without the time (fail safe): unacknowledged since the episode began
                        unack_since = since
                    a = _Alarm(
                        id=alarm_id(d.kind, str(row["key"])), kind=d.kind, key=str(row["key"]),
                        seq=int(row["seq"]), definition=d, priority=Priority(row["priority"]),
                        message=str(row["message"]), detail=dict(row.get("detail") or {}),
                        since=since,
                        unack_since=None if acknowledged else unack_since,
                        condition_active=bool(row["condition_active"]),
                        acknowledged=acknowledged,
                        acknowledged_by=row.get("acknowledged_by"),
                        escalated=bool(row["escalated"]),
                        acknowledged_at=at(row, "acknowledged_at", "ack_age_s"),
                    )
                    alarms[a.id] = a
                notices = [
                    NoticeView(now - float(n["age_s"]) if not exact else min(now, float(n["t"]) + float(shift or 0)),
                               n["kind"], n["key"], n["title"], n["message"], dict(n.get("detail") or {}))
                    for n in data.get("notices", [])
                ]
                seq = max([int(data.get("seq", 0))] + [a.seq for a in alarms.values()])
                reminders = int(data.get("reminders", 0))
                pause = self._saved_pause(data.get("audio"), now, shift) if exact else None
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"alarm state cannot be restored: {exc}") from None
            self._alarms = alarms
            self._notices = deque(notices, maxlen=_MAX_NOTICES)
            self._seq = seq
            self._reminders = reminders
            self._set_normal(now, who)
            if pause is not None:
                since, until, duration, by = pause
                self._audio_mode = AudioMode.PAUSED
                self._audio_since, self._pause_until, self._pause_duration, self._audio_by = since, until, duration, by
            self._emit_raw(LogEntry(now, None, "restored", who, detail={
                "alarms": sorted(alarms), "audio_mode_at_save": data.get("audio_mode_at_save"),
                "audio_now": self._audio_mode,
                **({"pause_until": pause[1]} if pause is not None else {}),
            }))

    def _saved_pause(self, audio: Any, now: float,
                     shift: float | None) -> tuple[float, float, float, str | None] | None:
        """(since, until, duration, by) of a saved audio pause still running now, on this clock."""
        if not isinstance(audio, Mapping) or audio.get("mode") != AudioMode.PAUSED or audio.get("until") is None:
            return None
        until = float(audio["until"]) + float(shift or 0.0)
        duration = float(audio.get("duration") or 0.0)
        saved_since = audio.get("since")
        since = (float(saved_since) + float(shift or 0.0)) if saved_since is not None else until - duration
        if until <= now or not 0 < duration <= self._pause_s or until - since > self._pause_s + 1e-6:
            return None
        return since, until, duration, audio.get("by")

    # -- logging -------------------------------------------------------------------------

    def _emit(self, now: float, a: _Alarm, transition: str, who: str, detail: Mapping[str, Any]) -> None:
        self._emit_raw(LogEntry(now, a.id, transition, who, a.kind.value, a.priority.value, dict(detail)))

    def _refuse(self, now: float, aid: str | None, action: str, who: str, reason: str) -> None:
        self._emit_raw(LogEntry(now, aid, "refused", who, detail={"action": action, "reason": reason}))

    def _emit_raw(self, entry: LogEntry) -> None:
        self._log.append(entry)
        if self._on_log is not None:
            self._on_log(entry)


__all__ = [
    "AlarmManager",
    "AlarmState",
    "AlarmView",
    "AudioMode",
    "AudioView",
    "Category",
    "LogEntry",
    "NoticeView",
    "alarm_id",
]
