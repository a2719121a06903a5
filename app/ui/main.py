"""The Kivy application: root layout, navigation, the engine pump and screenshots.

Owns: ``LnmApp`` (the App: sizes from the display's dpi, the engine link pumped from
the frame clock, the display stores fed by the stream, the alarm banner, the message bar
and navigation, the command helper every screen uses) and ``save_screenshot``. Import
this module only after ``app.ui.options.configure_kivy`` (it creates the window).

Unexpected errors: an ``ExceptionManager`` handler catches whatever a touch or a timer
raises, logs it, shows a technical message, sends it to the engine to be journaled
(``app.ui.faults``) and lets the UI run on; each screen's ``update``/``frame`` and each
command's callback is also guarded one by one in the pump, so that one failing screen
never stops the alarm banner from following the engine.

Threads: the UI thread only. The engine link's threads never touch a widget: the app
pulls their results from queues in ``_pump`` (a ``Clock`` callback); the report
renderer's thread hands its result back with ``Clock.schedule_once``.
May import: Kivy, numpy, ``app.ui.*``, ``app.api.client`` (through ``app.ui.link``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any
from collections.abc import Callable

from app.ui import faults as F
from app.ui import present as P
from app.ui import words as W
from app.ui.options import UiOptions


def save_screenshot(path: str | os.PathLike[str]) -> str:
    """The window's current frame as a PNG at exactly ``path``."""
    from kivy.core.window import Window
    from kivy.graphics.opengl import GL_RGB, GL_UNSIGNED_BYTE, glReadPixels
    from PIL import Image

    w, h = Window.size
    data = glReadPixels(0, 0, w, h, GL_RGB, GL_UNSIGNED_BYTE)
    img = Image.frombytes("RGB", (w, h), bytes(data)).transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    img.save(tmp)
    os.replace(tmp, path)
    return str(path)


from kivy.app import App  # noqa: E402  (configure_kivy ran before this module is imported)
from kivy.base import ExceptionHandler, ExceptionManager  # noqa: E402
from kivy.clock import Clock  # noqa: E402
from kivy.logger import Logger  # noqa: E402
from kivy.core.window import Window  # noqa: E402
from kivy.lang import Builder  # noqa: E402
from kivy.metrics import Metrics  # noqa: E402
from kivy.properties import BooleanProperty, NumericProperty, StringProperty  # noqa: E402
from kivy.uix.boxlayout import BoxLayout  # noqa: E402
from kivy.uix.screenmanager import NoTransition, ScreenManager  # noqa: E402

from app.ui.data import EmgRing, EpochStore, EventLog, References, SiteHistory, TrendStore  # noqa: E402
from app.ui.link import EngineLink, Reply  # noqa: E402
from app.ui.reader_banner import ReaderMessageBanner  # noqa: E402
from app.ui.widgets import AlarmBanner, MessageBar, NavBar, TButton  # noqa: E402

NAV = (  # (screen, label); "case" resolves to set-up or end of case
    ("monitor", "Monitor"),
    ("alarms", "Alarms"),
    ("los", "Loss of\nsignal"),
    ("tube", "Tube"),
    ("case", "Case"),
    ("sim", "Simulator"),
    ("settings", "Settings"),
)


# Live data (traces, numbers, the state) reach the screen at most this often: every change
# of the window costs a whole redraw (on the Pi's GPU, or in software), so the changes of
# a tenth of a second are drawn together. Alarms and touches are not held back.
DISPLAY_HZ = 7.0
# The engine link is read this often (replies and stream messages; a screen draws them at
# its next display tick).
PUMP_HZ = 15.0


class Root(BoxLayout):
    """The window's content: alarm banner, message bar, the screens, the navigation bar."""


class UiExceptionHandler(ExceptionHandler):
    """Kivy's last line of defence: an exception raised by a touch or a timer is logged,
    shown and journaled (``LnmApp.report_fault``) and the UI keeps running (PASS)."""

    def __init__(self, app: LnmApp) -> None:
        self.app = app

    def handle_exception(self, exception: BaseException) -> int:
        if isinstance(exception, (KeyboardInterrupt, SystemExit)):
            return ExceptionManager.RAISE
        try:
            self.app.report_fault(exception, "handling a touch or a timer")
        except Exception:  # the report itself failed: the log is all there is
            Logger.exception("LNM UI: an unexpected error could not be reported")
        return ExceptionManager.PASS


class LnmApp(App):
    """The touchscreen application (see the module docstring)."""

    title = "LNM nerve monitor"
    tp = NumericProperty(48)  # touch target, px (>= 9 mm)
    pad = NumericProperty(6)
    fs = NumericProperty(18)
    fs_small = NumericProperty(15)
    fs_large = NumericProperty(22)
    fs_big = NumericProperty(64)
    fs_mid = NumericProperty(36)
    dpi = NumericProperty(133)
    simulated = BooleanProperty(False)
    case_open = BooleanProperty(False)
    health_state = StringProperty("connecting")
    wide = BooleanProperty(False)  # a wide screen (1280x800): the waveforms take more of the width

    def __init__(self, options: UiOptions | None = None, link: EngineLink | Any = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.options = options or UiOptions()
        self.link = link or EngineLink(self.options.socket, name=self.options.name, stale_s=self.options.stale_s)
        self.state: dict[str, Any] = {}
        self.alarms: dict[str, Any] = {}
        self.settings_values: dict[str, Any] = {}
        self.settings_schema: list[dict[str, Any]] = []
        self.emg = EmgRing(seconds=10.0)
        self.epochs = EpochStore()
        self.refs = References()
        self.trend = TrendStore()
        self.history = SiteHistory()
        self.events = EventLog()
        self.frames = 0
        self.last_frame_t = time.monotonic()
        self.screens: dict[str, Any] = {}
        self._was_ok = False
        self._last_state_t = 0.0
        self._message_until = 0.0
        self._screenshot_next = 0.0
        self._stopped = False
        self.fault_log = F.FaultLog()
        self._pending_state: dict[str, Any] | None = None
        self._next_show = 0.0
        self._urgent = True
        self._exception_handler = UiExceptionHandler(self)

    # ------------------------------------------------------------------ sizes

    def compute_sizes(self) -> None:
        w, h = Window.size
        self.wide = w >= 1000
        dpi = self.options.dpi or P.display_dpi(w, h, self.options.diagonal_in, Metrics.dpi)
        self.dpi = dpi
        tp = P.touch_target_px(dpi)
        # at least 9 mm, and a little more when the screen has room
        self.tp = max(tp, int(h / 9.5))
        self.pad = max(3, int(self.tp * 0.1))
        scale = max(1.0, h / 480.0)
        self.fs_small = max(13, int(P.mm_to_px(2.3, dpi) / P.CAP_HEIGHT_EM), int(13 * scale))
        self.fs = max(16, int(P.mm_to_px(2.8, dpi) / P.CAP_HEIGHT_EM), int(16 * scale))
        self.fs_large = max(19, int(self.fs * 1.25))
        self.fs_mid = max(28, int(self.fs * 1.9))
        self.fs_big = max(P.font_px_for_cap(P.BIG_NUMBER_CAP_MM, dpi), int(h / 8.0))

    # ------------------------------------------------------------------ build

    def build(self) -> Root:
        from app.ui import screens

        self.compute_sizes()
        Builder.load_file(os.path.join(os.path.dirname(__file__), "main.kv"))
        root = Root()
        self.banner: AlarmBanner = root.ids.banner
        self.reader_banner = ReaderMessageBanner()  # the remote reader's messages (app.ui.reader_banner)
        root.add_widget(self.reader_banner, index=len(root.children) - 1)
        self.inbox: dict[str, Any] = {}
        self.message_bar: MessageBar = root.ids.message
        self.sm: ScreenManager = root.ids.sm
        self.sm.transition = NoTransition()
        for name, cls in screens.SCREENS.items():
            scr = cls(name=name)
            self.screens[name] = scr
            self.sm.add_widget(scr)
        self._build_nav(root.ids.nav)
        self.sm.current = self.options.start_screen
        self.sm.bind(current=self._on_screen)
        Window.clearcolor = P.PALETTE["bg"]
        Window.bind(size=lambda *_: self.compute_sizes())
        ExceptionManager.add_handler(self._exception_handler)
        self.link.start()
        Clock.schedule_interval(self._pump, 1.0 / PUMP_HZ)
        Clock.schedule_interval(self._flash, 1.0 / 20.0)
        Clock.schedule_interval(self._frame, 0)
        self.banner.show({}, self.link.health())
        return root

    def _build_nav(self, nav: NavBar) -> None:
        self.nav_buttons: dict[str, TButton] = {}
        for name, label in NAV:
            b = TButton(text=label, tid=f"nav.{name}", font_size=self.fs_small, kind="flat")
            b.bind(on_release=lambda _b, n=name: self.go(n))
            nav.add_widget(b)
            self.nav_buttons[name] = b
        self._update_nav()

    def _update_nav(self, *_: Any) -> None:
        cur = self.sm.current if hasattr(self, "sm") else ""
        for name, b in getattr(self, "nav_buttons", {}).items():
            here = cur == name or (name == "case" and cur in ("setup", "endcase", "report", "cases"))
            b.kind = "primary" if here else "flat"
            b.bold = here
            if name == "sim":
                b.disabled = not self.simulated
                b.opacity = 1 if self.simulated else 0.35
            if name == "los":
                los = self.state.get("los") or {}
                active = any((v or {}).get("active") for v in los.values())
                b.text = "LOSS OF\nSIGNAL !" if active else "Loss of\nsignal"

    def on_stop(self) -> None:
        self._stopped = True
        ExceptionManager.remove_handler(self._exception_handler)
        self.link.stop()

    # ------------------------------------------------------------------ faults

    @property
    def faults(self) -> list[F.Fault]:
        """The unexpected errors of this run (oldest first)."""
        return self.fault_log.faults

    def report_fault(self, exc: BaseException, where: str) -> None:
        """Log an unexpected error, show it, and send it to the engine's journal."""
        fault, send = self.fault_log.add(exc, where)
        if fault.count == 1:
            Logger.error(f"LNM UI: unexpected error while {where}:\n{fault.trace}")
        try:
            self.notify(F.screen_text(fault), "fault", seconds=30.0)
        except Exception:
            Logger.exception("LNM UI: the error message could not be shown")
        if send:
            def journaled(reply: Reply) -> None:
                if not reply.ok:
                    Logger.warning(f"LNM UI: the error was not journaled by the engine: {reply.message}")

            self.link.send("note.add", journaled, text=F.journal_text(fault))

    def guard(self, where: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``; an exception is reported (``report_fault``) instead of raised."""
        try:
            return fn(*args)
        except Exception as exc:
            self.report_fault(exc, where)
            return None

    # ------------------------------------------------------------------ navigation

    def go(self, name: str) -> None:
        if name == "case":
            name = "endcase" if self.case_open else "setup"
        if name in self.screens and self.sm.current != name:
            self.sm.current = name

    def _on_screen(self, *_: Any) -> None:
        self._update_nav()
        scr = self.screens.get(self.sm.current)
        if scr is not None and self.state:
            self.guard(f"showing the {scr.name} screen", scr.update, self.state)

    # ------------------------------------------------------------------ commands

    def cmd(self, cmd: str, on_ok: Callable[[dict[str, Any]], None] | None = None,
            on_error: Callable[[Reply], bool | None] | None = None, ok_message: str | None = None,
            **args: Any) -> None:
        """Send a command. A refusal is shown in the message bar in words unless ``on_error``
        returns True (handled); a refusal that only needs a confirmation (a high current)
        is asked as a question and sent again with ``confirm`` when the nurse confirms."""

        def done(reply: Reply) -> None:
            if reply.ok:
                if ok_message:
                    self.notify(ok_message, "ok")
                if on_ok is not None:
                    on_ok(reply.result)
                return
            if on_error is not None and on_error(reply):
                return
            if reply.code == "needs_confirmation" and not args.get("confirm"):
                self.ask_confirmation(cmd, args, reply, on_ok, ok_message)
                return
            self.notify(W.refusal_words(reply.code, reply.message, reply.error), "refused")

        self.link.send(cmd, done, **args)

    def ask_confirmation(self, cmd: str, args: dict[str, Any], reply: Reply,
                         on_ok: Callable[[dict[str, Any]], None] | None, ok_message: str | None) -> None:
        """The engine wants a confirmation (a current above ``stim.confirm_above_mA``): ask
        it as a question, never show it as a refusal."""
        from app.ui.widgets import confirm

        value = args.get("current_mA")
        limit = reply.error.get("limit_mA", (self.state.get("stim") or {}).get("confirm_above_mA"))
        if isinstance(value, (int, float)) and isinstance(limit, (int, float)):
            what = "probe" if args.get("output") == "probe" else "continuous vagal electrode"
            title = f"{value:g} mA is above {limit:g} mA: confirm?"
            text = (f"Set the {what} to {value:g} mA?\n\nCurrents above {limit:g} mA can stimulate more than the "
                    "target nerve and are rarely needed (INMSG: 1-2 mA).")
            yes = f"Set {value:g} mA"
            ok_message = ok_message or f"{what} current set to {value:g} mA (confirmed)"
        else:
            title, text, yes = "Confirm?", W.plain(reply.message), "Confirm"
        confirm(title, text, lambda: self.cmd(cmd, on_ok=on_ok, ok_message=ok_message, **args, confirm=True),
                confirm_text=yes, cancel_text="Cancel", danger=True)

    def notify(self, message: str, level: str = "info", seconds: float = 8.0) -> None:
        """Show ``message`` in the message bar for ``seconds`` (level: info, ok, refused, fault)."""
        self.message_bar.message = message
        self.message_bar.level = level if level in ("info", "ok", "refused", "fault") else "info"
        self._message_until = time.monotonic() + seconds

    def set_stim_current(self, output: str, current_mA: float, on_done: Callable[[], None] | None = None,
                         on_refused: Callable[[], None] | None = None) -> None:
        """Set a stimulator current; above the engine's limit it asks for a confirmation."""
        value = round(float(current_mA), 2)

        def refused(_reply: Reply) -> bool:
            if on_refused is not None:
                on_refused()
            return False  # shown (or asked) by cmd

        self.cmd("stim.set", on_ok=lambda _r: on_done() if on_done else None, on_error=refused,
                 output=output, current_mA=value)

    def set_settings(self, changes: dict[str, Any], *, ask_pin: bool = False,
                     on_ok: Callable[[dict[str, Any]], None] | None = None,
                     on_refused: Callable[[Reply], bool | None] | None = None, ok_message: str | None = None) -> None:
        """``settings.set``; a protected limit relaxed (or changed under its alarm) is sent
        again only after the nurse confirms, with the settings PIN first when ``ask_pin``
        (a change made outside the settings screen, which is behind the PIN already)."""
        from app.ui.widgets import ask_text, confirm

        def again() -> None:
            self.cmd("settings.set", on_ok=on_ok, on_error=on_refused, ok_message=ok_message, changes=changes,
                     confirm=True)

        def refused(reply: Reply) -> bool:
            if reply.code != "needs_confirmation" or not reply.error.get("settings"):
                return bool(on_refused(reply)) if on_refused is not None else False
            lines = "\n".join(f"- {x.get('text')}" for x in reply.error["settings"])

            def ask() -> None:
                confirm("Confirm a protected limit", f"{lines}\n\nIt stays shown on the monitor until it is "
                        "restored.", again, confirm_text="Change it", danger=True)

            if not ask_pin:
                ask()
                return True
            pin = str(self.settings_values.get("ui.settings_pin") or "")

            def check(text: str) -> None:
                if pin and text == pin:
                    ask()
                else:
                    self.notify("Wrong PIN: the limit was not changed", "refused")

            ask_text("Settings PIN (protected limit)", check, mode="pin")
            return True

        self.cmd("settings.set", on_ok=on_ok, on_error=refused, ok_message=ok_message, changes=changes)

    def refresh_settings(self) -> None:
        def got(result: dict[str, Any]) -> None:
            self.settings_values = dict(result.get("values") or {})
            self.settings_schema = list(result.get("schema") or [])
            scr = self.screens.get(self.sm.current)
            if scr is not None and self.state:
                self.guard(f"showing the {scr.name} screen", scr.update, self.state)

        self.cmd("settings.get", on_ok=got)

    def refresh_trend(self) -> None:
        self.cmd("trend.get", on_ok=self.trend.load, max_points=5000)

    # ------------------------------------------------------------------ frame clock

    def _frame(self, _dt: float) -> None:
        self.frames += 1
        self.last_frame_t = time.monotonic()

    def _pump(self, _dt: float) -> None:
        # an error here must never stop the pump (Kivy drops an interval callback that raised):
        # the alarm banner follows the engine whatever else fails
        if not self._stopped:
            self.guard("reading the engine", self._pump_once)

    def _pump_once(self) -> None:
        msgs = self.link.pump(on_error=lambda exc, cmd: self.report_fault(exc, f"handling the answer to {cmd}"))
        for msg in msgs:
            kind = msg.get("type")
            if kind == "state":
                self._pending_state = msg
            else:
                if kind in ("alarms", "inbox"):
                    self._urgent = True  # a new or changed alarm or reader message shows at once
                self.guard(f"reading a {kind} message from the engine", self._take, msg)
        health = self.link.health()
        if health.ok and not self._was_ok:
            self._on_connected()
        if health.ok != self._was_ok or health.state != self.health_state:
            self._urgent = True
        self._was_ok = health.ok
        self.health_state = health.state
        now = time.monotonic()
        if not self._urgent and now < self._next_show:
            return  # the screen changes at most DISPLAY_HZ times a second: one redraw holds it all
        self._next_show = now + 1.0 / DISPLAY_HZ
        self._urgent = False
        self._show(health, now)

    def _show(self, health: Any, now: float) -> None:
        """Everything that arrived since the last time onto the screen, at once."""
        if self._pending_state is not None:
            state, self._pending_state = self._pending_state, None
            self._on_state(state)
        self.guard("showing the alarms on the banner", self.banner.show, self.alarms, health)
        self.guard("showing the reader's messages", self.reader_banner.show, self.inbox,
                   (self.state.get("case") or {}).get("case_id"))
        scr = self.screens.get(self.sm.current)
        if scr is not None:
            self.guard(f"drawing the {scr.name} screen", scr.frame)
        if self._message_until and now > self._message_until:
            self.message_bar.message = ""
            self.message_bar.level = "info"
            self._message_until = 0.0
        self._update_status(health)
        if self.options.screenshot and now >= self._screenshot_next:
            self._screenshot_next = now + self.options.screenshot_every_s
            try:
                save_screenshot(self.options.screenshot)
            except OSError as exc:
                self.notify(f"screenshot not written: {exc}", "refused")
                self.options.screenshot = None

    def _take(self, msg: dict[str, Any]) -> None:
        """One stream message (other than ``state``) into the display stores."""
        kind = msg.get("type")
        if kind == "measurement":
            self.trend.add(msg)
            self.history.add(msg)
        elif kind == "waveform":
            self.epochs.add(msg)
            self.refs.add(msg)
        elif kind == "emg":
            self.emg.add(msg)
        elif kind == "alarms":
            self.alarms = msg
        elif kind == "inbox":
            self.inbox = msg
        elif kind == "event":
            self.events.add(msg)
            self._on_event(msg)
        elif kind == "connection" and msg.get("connected"):
            self.simulated = bool((msg.get("hello") or {}).get("simulated"))

    def _on_connected(self) -> None:
        self.refresh_settings()
        self.refresh_trend()
        # a restarted engine numbers its events from the start again: the list is read anew
        self.events.reset()
        self.cmd("events.list", on_ok=lambda r: self.events.load(r.get("events") or []), limit=500)

    def _on_state(self, state: dict[str, Any]) -> None:
        self.state = state
        self.guard("keeping the reference waveforms", self.refs.update, state)
        self._last_state_t = time.monotonic()
        self.simulated = bool((state.get("engine") or {}).get("simulated", self.simulated))
        self.case_open = state.get("case") is not None
        if isinstance(state.get("alarms"), dict) and not self.alarms:
            self.alarms = state["alarms"]
        self._update_nav()
        scr = self.screens.get(self.sm.current)
        if scr is not None:
            self.guard(f"showing the {scr.name} screen", scr.update, state)

    def _on_event(self, ev: dict[str, Any]) -> None:
        kind = ev.get("kind")
        if kind in ("opened", "resumed", "closed", "baseline_set") or ev.get("category") == "case":
            self.refresh_trend()
        if ev.get("category") == "operator" and str(ev.get("kind", "")).startswith("settings"):
            self.refresh_settings()

    def _update_status(self, health: Any) -> None:
        st = self.state
        case = st.get("case") or {}
        board = st.get("board") or {}
        parts = []
        if case:
            parts.append(f"Patient {case.get('patient_id')}  {P.fmt_clock(st.get('t_s'))}")
        else:
            parts.append("No case open")
        if not health.ok:
            parts.append("ENGINE: " + health.state.upper())
        elif board:
            if not board.get("connected"):
                parts.append("BOARD NOT CONNECTED")
            if board.get("faults"):
                parts.append("board reports: " + ", ".join(W.plain(str(f).replace("_", " ")) for f in board["faults"]))
        if self.simulated:
            parts.append("SIMULATION")
        # protected limits relaxed beyond their defaults: always in sight until restored
        parts += [f"LIMIT: {lim.get('text')}" for lim in st.get("limits") or []]  # (no upper(): µ would change)
        self.message_bar.status = "   ".join(parts)

    def _flash(self, _dt: float) -> None:
        self.guard("flashing the alarm banner", self.banner.flash, time.monotonic())
