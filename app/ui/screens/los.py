"""Loss of signal: the INMSG troubleshooting sequence, mapping (type 1 / type 2), time
since the loss and the recovery trend, and the staging decision.

The engine keeps the troubleshooting record per side and proposes the next check
(``state.troubleshooting.<side>.next_check`` and ``next_question``); each YES/NO touched
here is sent as ``ts.answer`` and recorded by the engine, which draws the conclusion.
The surgeon's own verdict (``ts.verdict``), the mapping points (``mapping.result``) and
the staging decision (``staging.decision``) are recorded the same way, each with a
reason typed on the on-screen keyboard. The R2 and V2 given after the loss (no response
or a weak one) are documented by the monitor on its own; the checks page lists them
(``troubleshooting.<side>.offers``) and "Record R2" / "Record V2" makes that stimulus the
step, as the nurse's (``step.tag`` with ``which: "offer"``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from kivy.properties import BooleanProperty, NumericProperty, StringProperty

from app import format as fmt
from app.ui import present as P
from app.ui import words as W
from app.ui.plots import SeriesPlot
from app.ui.screens import LnmScreen, load_kv
from app.ui.widgets import ask_text


def answer_lines(answers: dict[str, Any]) -> str:
    """The troubleshooting answers, one line each, in words."""
    lines = []
    for key, a in answers.items():
        by = str(a.get("by") or "")
        who = "answered by the monitor" if by == "monitor" else W.who_words(by) or "recorded"
        lines.append(f"{'Yes' if a.get('answer') == 'yes' else 'No'}: {P.CHECK_LABELS.get(key, W.plain(key))} "
                     f"({who}, {P.fmt_clock(a.get('t_s'))})")
    return "\n".join(lines) or "No answers yet."


def conclusion_words(ts: dict[str, Any]) -> str:
    """The troubleshooting conclusion and the surgeon's verdict, in words."""
    verdict = ts.get("verdict")
    if ts.get("conclusion") == "open" and not verdict:
        return ""
    concl = P.CONCLUSIONS.get(str(ts.get("conclusion")), W.plain(ts.get("conclusion")))
    text = f"Conclusion: {concl}" + (" (confirmed)" if ts.get("confirmed") else "")
    if verdict:
        v = verdict.get("verdict", "") if isinstance(verdict, dict) else verdict
        text += f"; the surgeon's verdict: {W.plain(v)}"
    msg = W.plain(ts.get("message"))
    return text + (f"\n{msg}" if msg else "")


def mapping_words(points: list[dict[str, Any]]) -> str:
    """The mapping points grouped: where the nerve responded and where it did not."""
    if not points:
        return "No points yet: stimulate from distal (at the larynx, 0 mm) to proximal."
    yes = [f"{p.get('position_mm'):g}" for p in points if p.get("response")]
    no = [f"{p.get('position_mm'):g}" for p in points if not p.get("response")]
    parts = []
    if yes:
        parts.append("Response at " + ", ".join(yes) + " mm.")
    if no:
        parts.append("NO response at " + ", ".join(no) + " mm.")
    return " ".join(parts)


class LosScreen(LnmScreen):
    """The loss-of-signal guide (see the module docstring)."""

    side = StringProperty("L")
    page = StringProperty("checks")
    headline = StringProperty("No loss of signal")
    since = StringProperty("")
    recovery = StringProperty("")
    question = StringProperty("")
    check = StringProperty("")
    answers = StringProperty("")
    conclusion = StringProperty("")
    ts_open = BooleanProperty(False)
    has_ts = BooleanProperty(False)
    mapping_text = StringProperty("")
    mapping_points = StringProperty("")
    position_mm = NumericProperty(10.0)
    staging_text = StringProperty("")
    staging_active = BooleanProperty(False)
    staging_decided = StringProperty("")
    los_active = BooleanProperty(False)
    offers_text = StringProperty("")
    offer_R2 = StringProperty("")  # the button's text; empty: nothing offered for R2
    offer_V2 = StringProperty("")

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        plot: SeriesPlot = self.ids.recovery
        plot.add_series("amp", P.PALETTE["side_L"], width=2.0)
        self._auto_side = True
        self._key: str | None = None
        self._drawn = -1

    def update(self, state: dict[str, Any]) -> None:
        los = state.get("los") or {}
        ts_all = state.get("troubleshooting") or {}
        if self._auto_side:
            for s in ("L", "R"):
                if (los.get(s) or {}).get("active") or ((ts_all.get(s) or {}).get("open")):
                    self.side = s
                    break
        for s in ("L", "R"):
            t = self.ids[f"side_{s}"]
            t.state = "down" if self.side == s else "normal"
            t.text = f"{P.side_name(s).title()}" + ("  LOS!" if (los.get(s) or {}).get("active") else "")
        for p in ("checks", "mapping", "staging"):
            self.ids[f"page_{p}"].state = "down" if self.page == p else "normal"
        mine = los.get(self.side) or {}
        ts = ts_all.get(self.side)
        now = state.get("t_s")
        self.los_active = bool(mine.get("active"))
        self.has_ts = ts is not None
        sites = list(((ts or {}).get("sites") or {}).keys())
        where = " and ".join(P.SITE_NAMES.get(s, s) for s in sites) or ""
        if mine.get("active") or ts:
            since = mine.get("since_s") if mine.get("since_s") is not None else (ts or {}).get("t_s")
            self.headline = (f"LOSS OF SIGNAL, {P.side_name(self.side).lower()} {where}".strip()
                             + ("" if mine.get("active") else " (recovered)" if mine.get("recovered_at_s") else ""))
            self.since = ("" if since is None or now is None else
                          f"{P.fmt_duration(now - since)} since the loss at {P.fmt_clock(since)}")
            rec = mine.get("recovered_at_s") or (ts or {}).get("recovered_t_s")
            if rec is not None:
                self.since += f"; recovered at {P.fmt_clock(rec)}"
            self._key = f"{sites[0] if sites else 'VAGUS'}-{self.side}"
            self._since = since
        else:
            self.headline = f"No loss of signal on the {P.side_name(self.side).lower()}"
            self.since = ""
            self._key = None
        self._recovery_text(state)
        # troubleshooting
        if ts:
            self.ts_open = bool(ts.get("open"))
            self.check = str(ts.get("next_check") or "")
            concl = P.CONCLUSIONS.get(str(ts.get("conclusion")), str(ts.get("conclusion")))
            self.question = str(ts.get("next_question") or (concl.upper() if ts.get("conclusion") != "open"
                                                            else "All checks answered."))
            self.answers = answer_lines(ts.get("answers") or {})
            self.conclusion = conclusion_words(ts)
        else:
            self.ts_open = False
            self.check = ""
            self.question = "Troubleshooting starts when the monitor detects a loss of signal on this side."
            self.answers = ""
            self.conclusion = ""
        self._offers((ts or {}).get("offers") or [])
        # mapping
        mp = (state.get("mapping") or {}).get(self.side) or {}
        self.mapping_text = W.plain(mp.get("message") or "Not mapped.")
        self.mapping_points = mapping_words(mp.get("points") or [])
        # staging
        stg = state.get("staging") or {}
        act = stg.get("active")
        self.staging_active = bool(stg.get("recommended") and act and not act.get("decision"))
        self.staging_text = W.plain(stg.get("reason") or "No staging recommendation: it appears after a confirmed, "
                                    "unrecovered loss of signal on the first side of a bilateral operation.")
        rec_side = (act or {}).get("side") if isinstance(act, dict) else None
        rec_at = (los.get(rec_side) or {}).get("recovered_at_s") if rec_side in ("L", "R") else None
        if stg.get("recommended") and rec_at is not None:
            self.staging_text += (f"\n\nThe {P.side_name(rec_side).lower()} signal has recovered since "
                                  f"(at {P.fmt_clock(rec_at)}): this advice may no longer apply.")
        dec = stg.get("decision") or (act or {}).get("decision")
        if isinstance(dec, dict):
            self.staging_decided = f"Decision recorded: {W.plain(dec.get('decision'))} ({dec.get('reason', '')})"
        else:
            self.staging_decided = f"Decision recorded: {W.plain(dec)}" if dec else ""
        self._drawn = -1

    def _recovery_text(self, state: dict[str, Any]) -> None:
        if self._key is None:
            self.recovery = ""
            return
        pts = self.app.history.since(self._key, (self._since or 0.0) - 60.0)
        base = ((state.get("baselines") or {}).get(self._key) or {}).get("amplitude_uV")
        after = [p for p in pts if p[0] >= (self._since or 0.0)]
        if not after:
            self.recovery = "No stimulus of this site since the loss."
            return
        last = [p[1] for p in after[-3:] if not math.isnan(p[1])]
        amp = float(np.mean(last)) if last else float("nan")
        pct = f" ({fmt.pct_text(amp / base * 100)} of baseline)" if base else ""
        trend = ""
        if len(after) >= 6:
            first = np.nanmean([p[1] for p in after[:3]])
            trend = (", trend RISING" if amp > first * 1.2 + 20 else ", trend falling" if amp < first * 0.8 - 20
                     else ", trend flat")
        self.recovery = f"Recovery: {P.fmt_amp(amp)} µV{pct}{trend}"

    def frame(self) -> None:
        if self.app.history.version == self._drawn:
            return
        self._drawn = self.app.history.version
        plot: SeriesPlot = self.ids.recovery
        if self._key is None:
            plot.set_series("amp", np.zeros(0), np.zeros(0))
            plot.redraw()
            return
        since = self._since or 0.0
        pts = self.app.history.since(self._key, since - 60.0)
        t = np.array([p[0] - since for p in pts], dtype=float)
        a = np.array([p[1] for p in pts], dtype=float)
        span = max(120.0, float(t[-1]) + 10.0 if len(t) else 120.0)
        base = ((self.app.state.get("baselines") or {}).get(self._key) or {}).get("amplitude_uV") or 0.0
        top = max(200.0, base * 1.2, float(np.nanmax(a)) if len(a) and np.isfinite(a).any() else 0.0)
        plot.y_max = round(top, -1)
        thr = float(self.app.state.get("threshold_uV") or 100.0)
        refs = [(thr, f"threshold {thr:.0f} µV")]
        if base:
            refs.append((base * 0.5, "50 % of baseline"))
        if refs != [tuple(r) for r in plot.references]:
            plot.references = refs
        plot.set_x_range(-60.0, span)
        plot.x_label = f"s from the loss (-60 to {span:.0f} s)"
        plot.set_series("amp", t, a)
        plot.redraw()

    # ------------------------------------------------------------------ actions

    def pick_side(self, side: str) -> None:
        self._auto_side = False
        self.side = side
        if self.app.state:
            self.update(self.app.state)

    def show_page(self, page: str) -> None:
        self.page = page
        self.ids.pages.current = page
        if self.app.state:
            self.update(self.app.state)

    def answer(self, yes: bool) -> None:
        if not self.check:
            self.app.notify("no question open on this side", "refused")
            return
        label = P.CHECK_LABELS.get(self.check, self.check)
        self.app.cmd("ts.answer", side=self.side, check=self.check, answer="yes" if yes else "no",
                     ok_message=f"recorded: {label}: {'yes' if yes else 'no'}")

    def _offers(self, offers: list[Any]) -> None:
        """The R2 / V2 given after the loss: what the monitor documented and a button to record it."""
        lines = []
        buttons = {"R2": "", "V2": ""}
        for o in offers:
            if not isinstance(o, dict) or o.get("step") not in buttons:
                continue
            step = str(o["step"])
            by_nurse = o.get("documented") and o.get("step_how") == "operator"
            lines.append(W.plain(str(o.get("message") or "")) + (" Recorded by the nurse." if by_nurse else
                                                                 " Documented by the monitor." if o.get("documented")
                                                                 else ""))
            buttons[step] = f"{step} recorded" if by_nurse else f"Record {step}"
        self.offers_text = "\n".join(lines)
        self.offer_R2, self.offer_V2 = buttons["R2"], buttons["V2"]

    def record_offer(self, step: str) -> None:
        """The stimulus the troubleshooting offers becomes the step (``step.tag``, ``which: offer``)."""
        self.app.cmd("step.tag", step=step, side=self.side, which="offer",
                     ok_message=f"{step} {P.side_name(self.side).lower()} recorded from the stimulus after the loss")

    def verdict(self, true_los: bool) -> None:
        v = "true_los" if true_los else "not_true_los"
        ask_text("Surgeon's verdict: reason",
                 lambda text: self.app.cmd("ts.verdict", side=self.side, verdict=v, reason=text,
                                           ok_message="verdict recorded") if text else
                 self.app.notify("a reason is needed: verdict not recorded", "refused"),
                 value="surgeon's judgement", hint="why (recorded with the verdict)")

    def move_position(self, delta: float) -> None:
        self.position_mm = max(0.0, min(150.0, self.position_mm + delta))

    def map_point(self, response: bool) -> None:
        args: dict[str, Any] = {"side": self.side, "position_mm": float(self.position_mm), "response": response}
        if response and self._key:
            pts = self.app.history.data.get(f"RLN-{self.side}") or []
            if pts and pts[-1][2] and not math.isnan(pts[-1][1]):
                args["amplitude_uV"] = round(float(pts[-1][1]), 1)

        def done(r: dict[str, Any]) -> None:
            t = r.get("los_type")
            self.app.notify("mapping point recorded" + (f": type {t} injury" if t else ""), "ok")

        self.app.cmd("mapping.result", on_ok=done, **args)

    def clear_mapping(self) -> None:
        self.app.cmd("mapping.clear", side=self.side, ok_message="mapping cleared")

    def staging(self, postpone: bool) -> None:
        d = "postpone_second_side" if postpone else "proceed_second_side"
        ask_text("Staging decision: reason",
                 lambda text: self.app.cmd("staging.decision", decision=d, reason=text,
                                           ok_message="staging decision recorded") if text else
                 self.app.notify("a reason is needed: decision not recorded", "refused"),
                 value="", hint="e.g. confirmed loss of signal, risk of bilateral palsy")


load_kv(__file__)
