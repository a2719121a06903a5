"""Alarms: the active alarms with priority in words and symbols, acknowledge, audio
pause with its countdown, audio off, reset; and the event list of the case.

Two pages. *Active alarms*: every active alarm in full (what happened, what to do, when
it was raised, whether it was acknowledged and by whom, whether its condition has ended),
highest priority first and, within a priority, the newest first, in a list that scrolls;
the actions below it. *Event list*: everything the engine announced in this case, newest
first, each with its case time, priority and full text in words, scrollable, optionally
only the alarms.

The engine owns the alarm state (catalogue, latching, escalation, pause timing); this
screen shows ``alarms`` messages and sends ``alarm.ack``, ``alarm.pause_audio``,
``alarm.audio_off`` and ``alarm.reset``. Every action is journaled by the engine.
"""

from __future__ import annotations

import time
from typing import Any

from kivy.properties import BooleanProperty, ColorProperty, StringProperty
from kivy.uix.boxlayout import BoxLayout

from app.ui import present as P
from app.ui import words as W
from app.ui.screens import LnmScreen, load_kv
from app.ui.widgets import confirm


class AlarmRow(BoxLayout):
    """One active alarm, in full (its height follows its text)."""

    alarm_id = StringProperty("")
    label = StringProperty("")
    headline = StringProperty("")
    text = StringProperty("")
    state_words = StringProperty("")
    colour = ColorProperty((0, 0, 0, 0))
    fg = ColorProperty(P.PALETTE["text"])
    can_ack = BooleanProperty(False)


def alarm_texts(a: dict[str, Any], state: dict[str, Any]) -> tuple[str, str]:
    """(what happened and what to do, its state in words) for one active alarm."""
    msg = W.plain(a.get("message"))
    action = W.plain(a.get("action"))
    text = msg + (("\nDo: " + action) if action and action not in msg else "")
    if a.get("kind") == "no_current":
        stim = state.get("stim") or {}
        now = [f"{'probe' if out == 'probe' else 'vagal electrode'} {P.fmt_ma(d.get('delivered_mA'))} mA of "
               f"{P.fmt_ma(d.get('current_mA'), 1)} mA" for out, d in (("probe", stim.get("probe") or {}),
                                                                      ("aps", stim.get("aps") or {})) if d.get("on")]
        if now:
            text += "\nDelivered now: " + "; ".join(now)
    parts = [("Technical alarm" if a.get("technical") else "Physiological alarm")
             + f", raised at {P.fmt_clock(a.get('raised_t_s'))}"]
    if a.get("acknowledged"):
        parts.append("acknowledged " + (W.who_words(a.get("acknowledged_by")) or "").strip())
    if a.get("latched") and not a.get("condition_active", True):
        parts.append("its condition has ended: reset to clear it" if a.get("latch") == "until_reset"
                     else "its condition has ended: acknowledge to clear it")
    elif a.get("condition_active", True):
        parts.append("condition still present")
    if a.get("escalated"):
        parts.append(f"escalated from {P.priority_label(a.get('original_priority'))}")
    return text, "; ".join(p.strip() for p in parts if p.strip())


class AlarmsScreen(LnmScreen):
    """The alarm list and the event list (see the module docstring)."""

    page = StringProperty("active")
    audio_text = StringProperty("")
    audio_off = BooleanProperty(False)
    count = StringProperty("")
    alarms_only = BooleanProperty(False)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._last_draw = 0.0
        self._rows: list[AlarmRow] = []
        self._shown_active: Any = None
        self._events_drawn: tuple[Any, ...] = ()

    def update(self, state: dict[str, Any]) -> None:
        self.refresh()

    def frame(self) -> None:
        # the pause countdown, new alarms and new events show without waiting for the state
        if self._last_draw + 0.25 < time.monotonic():
            self.refresh()

    def refresh(self) -> None:
        """Redraw what changed: the rows, the audio state, the event list."""
        self._last_draw = time.monotonic()
        al = self.app.alarms or {}
        active = P.display_order(list(al.get("active") or []))
        self.count = f"Active alarms ({len(active)})" if active else "Active alarms (none)"
        key = [(a.get("id"), a.get("acknowledged"), a.get("condition_active"), a.get("latched"), a.get("priority"))
               for a in active]
        if key != self._shown_active:
            self._shown_active = key
            self._show_rows(active)
        audio = al.get("audio") or "normal"
        self.audio_off = audio == "off"
        if audio == "paused":
            self.audio_text = f"Alarm audio PAUSED: {P.fmt_countdown(al.get('pause_remaining_s'))} left"
        elif audio == "off":
            rem = al.get("audio_off_reminder_in_s")
            self.audio_text = "Alarm audio OFF" + (f" (reminder in {P.fmt_countdown(rem)})" if rem else "")
        else:
            self.audio_text = "Alarm audio on"
        if self.page == "events":
            self._show_events()

    def _show_rows(self, active: list[Any]) -> None:
        box = self.ids.rows
        box.clear_widgets()
        state = self.app.state or {}
        for a in active:
            st = P.style(a.get("priority")) or P.PRIORITY_STYLES["low"]
            text, words = alarm_texts(a, state)
            row = AlarmRow(alarm_id=str(a.get("id") or ""), label=f"{st.symbol}\n{st.word}", colour=st.colour,
                           fg=st.text, headline=W.alarm_heading(a), text=text, state_words=words,
                           can_ack=not a.get("acknowledged"))
            box.add_widget(row)
        if not active:
            box.add_widget(AlarmRow(headline="No active alarms.", text="", state_words="", colour=(0, 0, 0, 0),
                                    label="", can_ack=False))

    def _show_events(self) -> None:
        log = self.app.events
        key = (log.version, self.alarms_only, round(self.width))
        if key == self._events_drawn:
            return
        self._events_drawn = key
        events = log.alarm_history() if self.alarms_only else list(reversed(log.of_case()))
        data = []
        for ev in events[:500]:
            st = P.style(ev.get("priority"))
            colour = P.PALETTE["text"] if st is None or ev.get("priority") == "low" else (
                st.colour if ev.get("priority") == "medium" else P.PALETTE["alarm_text"])
            data.append({"text": W.event_line(ev), "color": colour})
        if not data:
            data.append({"text": "Nothing has happened in this case yet.", "color": P.PALETTE["muted"]})
        self.ids.events.data = data

    def show_page(self, page: str) -> None:
        """The active alarms or the event list."""
        self.page = page
        self.ids.pages.current = page
        for p in ("active", "events"):
            self.ids[f"page_{p}"].state = "down" if p == page else "normal"
        self._events_drawn = ()
        self.refresh()

    def set_alarms_only(self, only: bool) -> None:
        """Show every event, or only the alarms."""
        self.alarms_only = only
        self.ids.only_alarms.state = "down" if only else "normal"
        self.refresh()

    def ack(self, alarm_id: str) -> None:
        """Acknowledge one alarm."""
        self.app.cmd("alarm.ack", alarm=alarm_id, ok_message="alarm acknowledged")

    def ack_top(self) -> None:
        """Acknowledge the top alarm as listed (the first unacknowledged one)."""
        active = P.display_order(list((self.app.alarms or {}).get("active") or []))
        top = next((a for a in active if not a.get("acknowledged")), None)
        if top is None:
            self.app.notify("no alarm to acknowledge", "info")
            return
        self.app.cmd("alarm.ack", alarm=str(top.get("id")), ok_message=f"acknowledged: {W.alarm_heading(top)}")

    def pause(self) -> None:
        """Pause the alarm audio for the set time."""
        self.app.cmd("alarm.pause_audio", ok_message="alarm audio paused")

    def reset(self) -> None:
        """Reset the latched alarms whose condition has ended."""
        def done(r: dict[str, Any]) -> None:
            ids = r.get("reset") or []
            self.app.notify("reset: " + ("; ".join(W.alarm_id_words(i) for i in ids) if ids else
                                         "nothing to reset (the conditions are still present)"), "ok")

        self.app.cmd("alarm.reset", on_ok=done)

    def toggle_audio_off(self) -> None:
        """Alarm audio off (after a confirmation), or on again."""
        if self.audio_off:
            self.app.cmd("alarm.audio_off", off=False, ok_message="alarm audio on")
            return
        confirm("Switch alarm audio OFF?",
                "Alarms will only be shown, not sounded, until audio is switched on again. A reminder "
                "sounds periodically and the banner says ALARM AUDIO OFF. Prefer 'Pause audio' (2 minutes).",
                lambda: self.app.cmd("alarm.audio_off", off=True, ok_message="alarm audio OFF"),
                confirm_text="Audio OFF", danger=True)


load_kv(__file__)
