"""The standardised INMSG case document (``lnm-case/1``), built from journal entries only.

Owns: ``build_document`` (journal + case -> dict) and ``document_from_entries`` (the pure
core: an iterable of entries -> dict). The schema is described in ``CASE_FORMAT.md``.
May import: the standard library, ``app.record.journal``, ``app.record.entries``,
``app.analysis.breathing`` (the breathing variation in words).

A tube check is journaled when its impedances come back (breathing variation
``measuring``) and again when its breathing-variation window ends; the document shows
them as one check (``breathing_t_s``: when the breathing variation was complete).

Nothing here reads the engine's memory: whatever the document says, the journal says.
Every part is optional in the input: a case without APS, with one side, without L2 or
without any step still gives a complete document whose missing values are ``null``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Mapping

from app.analysis.breathing import side_text
from app.record.entries import LARYNGOSCOPY_STEPS, PROCEDURE_ORDER, SIDES, STIM_STEPS
from app.record.journal import Entry

FORMAT = "lnm-case/1"
ADVERSE_KINDS = ("loss_of_signal", "combined_event", "amplitude_decrease")
SECRET_SETTINGS = ("ui.settings_pin",)  # never written into a document
PERSONAL_FIELDS = ("surgeon", "operator", "patient_name", "name", "birth_date", "hospital_number")

EVENT_TITLES = {
    "loss_of_signal": "Loss of signal",
    "combined_event": "Combined event",
    "amplitude_decrease": "Amplitude decrease (latency stable)",
    "signal_recovered": "Signal recovered",
    "no_current": "No stimulus current",
    "nonrecurrent_nerve_suspected": "Non-recurrent nerve suspected",
    "poor_baseline": "Poor baseline",
    "baseline_set": "Baseline set",
}


def build_document(journal: Any, case_id: str, identified: bool = False, verify: bool = True,
                   generated_at: str | None = None) -> dict[str, Any]:
    """The case document of ``case_id`` in ``journal`` (a ``Journal``)."""
    result = journal.verify(case_id) if verify else None
    doc = document_from_entries(journal.entries(case_id, blobs=False), identified=identified,
                                generated_at=generated_at)
    if result is not None:
        doc["journal"]["verified"] = result.ok
        doc["journal"]["verify_problem"] = None if result.ok else result.describe()
    doc["journal"]["path"] = str(journal.path)
    return doc


def document_from_entries(entries: Iterable[Entry], identified: bool = False,
                          generated_at: str | None = None) -> dict[str, Any]:
    b = _Builder(identified)
    for e in entries:
        b.add(e)
    return b.finish(generated_at)


SIDE_WORDS = {"L": "left", "R": "right"}


def _breathing_measuring(bv: Any) -> bool:
    """A tube check's breathing variation whose window was still running."""
    return isinstance(bv, Mapping) and any(isinstance(v, Mapping) and v.get("status") == "measuring"
                                           for v in bv.values())


def _r(x: Any, nd: int) -> Any:
    return None if x is None else round(float(x), nd)


def _side_of_alarm(p: Mapping[str, Any]) -> str | None:
    if p.get("side") in SIDES:
        return p["side"]
    aid = p.get("alarm_id") or p.get("alarm") or ""
    key = aid.split(":", 1)[1] if ":" in aid else ""
    tail = key.rsplit("-", 1)[-1] if key else ""
    return tail if tail in SIDES else None


def _alarm_kind(p: Mapping[str, Any]) -> str | None:
    if p.get("kind"):
        return p["kind"]
    if p.get("event_kind"):
        return p["event_kind"]
    aid = p.get("alarm_id") or p.get("alarm") or ""
    return aid.split(":", 1)[0] or None


class _Builder:
    def __init__(self, identified: bool) -> None:
        self.identified = identified
        self.case: dict[str, Any] = {}
        self.opened_wall: str | None = None
        self.closed: dict[str, Any] | None = None
        self.n = 0
        self.last: Entry | None = None
        self.settings: dict[str, Any] | None = None
        self.setting_changes: list[dict[str, Any]] = []
        self.tube_checks: list[dict[str, Any]] = []
        self.step_entries: dict[tuple[str, str], dict[str, Any]] = {}
        self.laryngoscopy: dict[tuple[str, str], dict[str, Any]] = {}
        self.procedure_state: dict[str, Any] | None = None
        self.tagged: dict[tuple[str, str], dict[str, Any]] = {}
        self.stim_seq: dict[int, int] = {}
        self.stim_counts: dict[str, int] = defaultdict(int)
        self.trends = {s: {"aps": {"t_s": [], "amplitude_uV": [], "latency_ms": [], "response": []},
                           "probe": {}, "baselines": []} for s in SIDES}
        self.timeline: list[dict[str, Any]] = []
        self.episodes: list[dict[str, Any]] = []
        self.alarms: dict[str, dict[str, Any]] = {}
        self.staging: list[dict[str, Any]] = []
        self.irritation: list[dict[str, Any]] = []
        self.cautery: list[dict[str, Any]] = []
        self.notes: list[dict[str, Any]] = []
        self.reader_messages: dict[str, dict[str, Any]] = {}  # the remote reader's messages, by id
        self.snapshots: list[dict[str, Any]] = []
        self.storage: list[dict[str, Any]] = []
        self.engine: list[dict[str, Any]] = []
        self.emg = {"blocks": 0, "samples": 0, "sample_rate_hz": None, "labels": None, "first_t_s": None,
                    "last_t_s": None}

    # ------------------------------------------------------------------ input

    def add(self, e: Entry) -> None:
        self.n += 1
        self.last = e
        handler = getattr(self, "_on_" + e.kind, None)
        if handler is not None:
            handler(e, e.payload)

    def _event(self, e: Entry, etype: str, text: str, side: str | None = None, **extra: Any) -> dict[str, Any]:
        item = {"t_s": _r(e.t_s, 3), "wall": e.wall, "seq": e.seq, "type": etype, "side": side, "text": text,
                "who": self._who(e.payload.get("who"))}
        item.update(extra)
        self.timeline.append(item)
        return item

    def _who(self, who: Any) -> Any:
        return who

    def _on_case_opened(self, e: Entry, p: Mapping[str, Any]) -> None:
        self.case = dict(p)
        self.opened_wall = e.wall

    def _on_case_closed(self, e: Entry, p: Mapping[str, Any]) -> None:
        self.closed = {"t_s": _r(e.t_s, 3), "wall": e.wall, "reason": p.get("reason"), "who": p.get("who")}
        self._event(e, "case_closed", "Case closed" + (f": {p['reason']}" if p.get("reason") else ""))

    def _on_settings(self, e: Entry, p: Mapping[str, Any]) -> None:
        first = self.settings is None
        values = {k: v for k, v in p["values"].items() if k not in SECRET_SETTINGS}
        self.settings = {"values": values, "source": p.get("source"), "profile": p.get("profile"),
                         "t_s": _r(e.t_s, 3)}
        if not first:
            self._event(e, "settings", "Settings reloaded" + (f" from {p['source']}" if p.get("source") else ""))

    def _on_setting_changed(self, e: Entry, p: Mapping[str, Any]) -> None:
        ch = {"t_s": _r(e.t_s, 3), "wall": e.wall, "key": p["key"], "old": p["old"], "new": p["new"],
              "unit": p.get("unit", ""), "who": p.get("who")}
        self.setting_changes.append(ch)
        unit = f" {p.get('unit')}" if p.get("unit") else ""
        self._event(e, "setting_changed", f"Setting {p['key']}: {p['old']} -> {p['new']}{unit}")

    def _on_tube_check(self, e: Entry, p: Mapping[str, Any]) -> None:
        tc = {"t_s": _r(e.t_s, 3), "wall": e.wall, **{k: p.get(k) for k in (
            "passed", "impedances_ohm", "imbalance_ohm", "lead_off", "breathing_variation", "limits",
            "override", "message", "who")}}
        prev = self.tube_checks[-1] if self.tube_checks else None
        if (prev is not None and _breathing_measuring(prev.get("breathing_variation"))
                and not _breathing_measuring(tc["breathing_variation"])
                and all(prev.get(k) == tc.get(k) for k in ("passed", "impedances_ohm", "override"))):
            # the end of that check's breathing-variation window: the same check, completed
            prev["breathing_variation"] = tc["breathing_variation"]
            prev["breathing_t_s"] = tc["t_s"]
            bv = tc["breathing_variation"]
            words = "; ".join(f"{SIDE_WORDS.get(k, k)} {side_text(v)}" for k, v in bv.items()) if isinstance(
                bv, Mapping) else side_text(bv)
            self._event(e, "tube_check", f"Breathing variation of the baseline EMG: {words}")
            return
        self.tube_checks.append(tc)
        verdict = "passed" if p["passed"] else ("overridden" if p.get("override") else "FAILED")
        self._event(e, "tube_check", f"Tube check {verdict}" + (f": {p['message']}" if p.get("message") else ""))

    def _on_stimulus(self, e: Entry, p: Mapping[str, Any]) -> None:
        self.stim_seq[p["index"]] = e.seq
        self.stim_counts["total"] += 1
        self.stim_counts["valid" if p["valid"] else "invalid"] += 1
        self.stim_counts[p["source"]] += 1
        if p.get("response"):
            self.stim_counts["responses"] += 1
        side = p["side"]
        if side not in SIDES or not p["valid"]:
            return
        tr = self.trends[side]
        if p["source"] == "APS":
            series = tr["aps"]
        elif p["site"] in ("VAGUS", "RLN", "EBSLN"):
            series = tr["probe"].setdefault(p["site"], {"t_s": [], "amplitude_uV": [], "latency_ms": [],
                                                        "response": []})
        else:
            series = None
        if series is not None:
            series["t_s"].append(_r(p["t_s"], 3))
            series["amplitude_uV"].append(_r(p.get("amplitude_uV"), 1))
            series["latency_ms"].append(_r(p.get("latency_ms"), 3))
            series["response"].append(bool(p.get("response")))
        step = p.get("step")
        if step in STIM_STEPS:
            value = self._value_from_stimulus(e, p, "tagged")
            old = self.tagged.get((side, step))
            if old is None or _better(value, old):
                value["count"] = (old or {}).get("count", 0) + 1
                self.tagged[(side, step)] = value
            else:
                old["count"] = old.get("count", 0) + 1

    def _value_from_stimulus(self, e: Entry, p: Mapping[str, Any], how: str) -> dict[str, Any]:
        return {"t_s": _r(p["t_s"], 3), "site": p.get("site"), "source": p.get("source"),
                "response": bool(p.get("response")), "amplitude_uV": _r(p.get("amplitude_uV"), 1),
                "latency_ms": _r(p.get("latency_ms"), 3), "onset_latency_ms": _r(p.get("onset_latency_ms"), 3),
                "set_mA": p.get("set_mA"), "delivered_mA": p.get("delivered_mA"), "pw_us": p.get("pw_us"),
                "stimulus_index": p.get("index"), "stimulus_seq": e.seq if "waveform" in p else None,
                "how": how, "who": None}

    def _on_emg_block(self, e: Entry, p: Mapping[str, Any]) -> None:
        em = self.emg
        em["blocks"] += 1
        em["samples"] += int(p["waveform"]["n"])
        em["sample_rate_hz"] = p["sample_rate_hz"]
        em["labels"] = p["labels"]
        if em["first_t_s"] is None:
            em["first_t_s"] = _r(p["t_s"], 6)
        em["last_t_s"] = _r(p["t_s"] + p["waveform"]["n"] / p["sample_rate_hz"], 6)

    def _on_step(self, e: Entry, p: Mapping[str, Any]) -> None:
        v = {"t_s": _r(p.get("stimulus_t_s", e.t_s), 3), "site": None, "source": None,
             "response": p.get("response"), "amplitude_uV": _r(p.get("amplitude_uV"), 1),
             "latency_ms": _r(p.get("latency_ms"), 3), "onset_latency_ms": _r(p.get("onset_latency_ms"), 3),
             "set_mA": p.get("set_mA"), "delivered_mA": p.get("delivered_mA"), "pw_us": p.get("pw_us"),
             "stimulus_index": p.get("stimulus_index"), "stimulus_seq": None, "how": "step", "who": p.get("who"),
             "comment": p.get("comment"), "recorded_t_s": _r(e.t_s, 3)}
        idx = p.get("stimulus_index")
        if idx is not None:
            v["stimulus_seq"] = self.stim_seq.get(idx)
        self.step_entries[(p["side"], p["step"])] = v
        amp = f"{v['amplitude_uV']:.0f} uV" if v["amplitude_uV"] is not None else "no value"
        lat = f", {v['latency_ms']:.2f} ms" if v["latency_ms"] is not None else ""
        self._event(e, "step", f"Step {p['step']} {p['side']}: {amp}{lat}", p["side"])

    def _on_laryngoscopy(self, e: Entry, p: Mapping[str, Any]) -> None:
        pairs = []
        if p.get("side") in SIDES and p.get("finding"):
            pairs.append((p["side"], p["finding"]))
        for side, key in (("L", "left"), ("R", "right")):
            if p.get(key):
                pairs.append((side, p[key]))
        for side, finding in pairs:
            self.laryngoscopy[(side, p["step"])] = {"finding": finding, "t_s": _r(e.t_s, 3), "who": p.get("who"),
                                                    "comment": p.get("comment")}
        text = ", ".join(f"{s} {f}" for s, f in pairs)
        self._event(e, "laryngoscopy", f"{p['step']} laryngoscopy: {text}")

    def _on_procedure(self, e: Entry, p: Mapping[str, Any]) -> None:
        self.procedure_state = dict(p["state"])

    def _on_rule_event(self, e: Entry, p: Mapping[str, Any]) -> None:
        kind, side = p["kind"], p["side"]
        title = EVENT_TITLES.get(kind, kind)
        detail = p.get("detail") or {}
        item = self._event(e, "rule_event", f"{title} ({p['site']} {side})", side, kind=kind,
                           priority=p.get("priority"), site=p.get("site"))
        item["t_s"] = _r(p["t_s"], 3)
        if kind == "baseline_set" and detail.get("amplitude_uV") is not None and detail.get("source", "APS") == "APS":
            self.trends[side]["baselines"].append({"t_s": _r(p["t_s"], 3), "amplitude_uV": detail.get("amplitude_uV"),
                                                   "latency_ms": detail.get("latency_ms"),
                                                   "number": detail.get("number")})
        if kind in ADVERSE_KINDS:
            self.episodes.append({
                "kind": kind, "title": title, "side": side, "site": p["site"], "priority": p.get("priority"),
                "t_s": _r(p["t_s"], 3), "wall": e.wall, "stimulus_index": p.get("stimulus_index"),
                "detail": detail, "acknowledged": None, "troubleshooting": [], "mapping": [], "los_type": None,
                "recovered_t_s": None, "recovery_s": None, "staging": [], "alarm_transitions": [],
            })
        elif kind == "signal_recovered":
            for ep in self.episodes:
                if ep["side"] == side and ep["recovered_t_s"] is None and (
                        ep["site"] == p["site"] or ep["kind"] != "loss_of_signal"):
                    ep["recovered_t_s"] = _r(p["t_s"], 3)
                    ep["recovery_s"] = _r(p["t_s"] - ep["t_s"], 1)

    def _episode_for(self, side: str | None, t_s: float, kinds: tuple[str, ...] = ADVERSE_KINDS) -> dict | None:
        best = None
        for ep in self.episodes:
            if ep["kind"] in kinds and (side is None or ep["side"] == side) and ep["t_s"] <= t_s + 1e-6:
                best = ep
        return best

    def _on_alarm(self, e: Entry, p: Mapping[str, Any]) -> None:
        aid = p.get("alarm_id") or p.get("alarm")
        kind = _alarm_kind(p)
        side = _side_of_alarm(p)
        tr = p["transition"]
        who = p.get("who")
        if aid:
            a = self.alarms.setdefault(aid, {"alarm_id": aid, "kind": kind, "side": side, "priority": p.get("priority"),
                                             "raised_t_s": None, "acknowledged_t_s": None, "acknowledged_by": None,
                                             "ended_t_s": None, "transitions": 0})
            a["transitions"] += 1
            if p.get("priority"):
                a["priority"] = a["priority"] or p.get("priority")
            if tr in ("raised", "raise", "re_raised") and a["raised_t_s"] is None:
                a["raised_t_s"] = _r(e.t_s, 3)
            if tr in ("acknowledged", "ack") and a["acknowledged_t_s"] is None:
                a["acknowledged_t_s"] = _r(e.t_s, 3)
                a["acknowledged_by"] = who
            if tr in ("cleared", "condition_ended", "reset", "removed", "clear"):
                a["ended_t_s"] = _r(e.t_s, 3)
        label = aid or "audio"
        msg = p.get("message") or (p.get("detail") or {}).get("message") or ""
        text = f"Alarm {tr.replace('_', ' ')}: {label}" + (f" ({p['priority']})" if p.get("priority") else "")
        if msg and tr in ("raised", "raise"):
            text += f": {msg}"
        self._event(e, "alarm", text, side, transition=tr, alarm_id=aid)
        if kind in ADVERSE_KINDS:
            ep = self._episode_for(side, e.t_s, (kind,))
            if ep is not None:
                ep["alarm_transitions"].append({"t_s": _r(e.t_s, 3), "transition": tr, "who": who})
                if tr in ("acknowledged", "ack") and ep["acknowledged"] is None:
                    ep["acknowledged"] = {"t_s": _r(e.t_s, 3), "who": who,
                                          "after_s": _r(e.t_s - ep["t_s"], 1)}

    def _on_troubleshooting(self, e: Entry, p: Mapping[str, Any]) -> None:
        side = p.get("side")
        item = {"t_s": _r(e.t_s, 3), "check": p["check"], "question": p.get("question"), "answer": p["answer"],
                "who": p.get("who")}
        ep = self._episode_for(side, e.t_s, ("loss_of_signal",)) or self._episode_for(side, e.t_s)
        if ep is not None:
            ep["troubleshooting"].append(item)
        q = p.get("question") or p["check"].replace("_", " ")
        self._event(e, "troubleshooting", f"Troubleshooting: {q} -> {p['answer']}", side)

    def _on_mapping(self, e: Entry, p: Mapping[str, Any]) -> None:
        item = {"t_s": _r(e.t_s, 3), "position_mm": p["position_mm"], "response": p["response"],
                "amplitude_uV": p.get("amplitude_uV")}
        ep = self._episode_for(p["side"], e.t_s, ("loss_of_signal",))
        if ep is not None:
            ep["mapping"].append(item)
        self._event(e, "mapping", f"Mapping {p['side']} at {p['position_mm']} mm: "
                                  f"{'response' if p['response'] else 'no response'}", p["side"])

    def _on_los_type(self, e: Entry, p: Mapping[str, Any]) -> None:
        ep = self._episode_for(p["side"], e.t_s, ("loss_of_signal",))
        words = "type 1 (segmental)" if p["los_type"] == 1 else "type 2 (global)"
        if ep is not None:
            ep["los_type"] = {"type": p["los_type"], "t_s": _r(e.t_s, 3), "who": p.get("who"), "detail": p.get("detail")}
        self._event(e, "los_type", f"Loss of signal {p['side']}: {words}", p["side"])

    def _on_staging(self, e: Entry, p: Mapping[str, Any]) -> None:
        item = {"t_s": _r(e.t_s, 3), "wall": e.wall, "recommendation": p["recommendation"],
                "decision": p.get("decision"), "reason": p.get("reason"), "who": p.get("who"), "side": p.get("side")}
        self.staging.append(item)
        ep = self._episode_for(p.get("side"), e.t_s, ("loss_of_signal",))
        if ep is not None:
            ep["staging"].append(item)
        text = f"Staging: {p['recommendation']}"
        if p.get("decision"):
            text += f"; decision: {p['decision'].replace('_', ' ')}"
            if p.get("reason"):
                text += f" ({p['reason']})"
        self._event(e, "staging", text, p.get("side"))

    def _on_irritation(self, e: Entry, p: Mapping[str, Any]) -> None:
        self.irritation.append({"onset_s": _r(p["onset_s"], 3), "side": p["side"], "duration_s": _r(p["duration_s"], 3),
                                "peak_uV": _r(p["peak_uV"], 1), "kind": p.get("kind"), "channel": p.get("channel"),
                                "rms_uV": _r(p.get("rms_uV"), 1)})

    def _on_cautery(self, e: Entry, p: Mapping[str, Any]) -> None:
        self.cautery.append({"t_s": _r(e.t_s, 3), "state": p["state"], "duration_s": p.get("duration_s")})

    def _on_operator(self, e: Entry, p: Mapping[str, Any]) -> None:
        detail = p.get("detail")
        extra = f" ({detail})" if isinstance(detail, str) and detail else ""
        self._event(e, "operator", f"Operator: {p['action'].replace('_', ' ')}{extra}", None)

    def _on_reader_message(self, e: Entry, p: Mapping[str, Any]) -> None:
        """A remote reader's message (or interpretation) and the OR's acknowledgement."""
        if p["event"] == "received":
            self.reader_messages[p["id"]] = {
                "t_s": _r(e.t_s, 3), "wall": e.wall, "kind": p.get("kind") or "message", "text": p.get("text"),
                "from": (p.get("from") or p["reader"]) if self.identified else "remote reader",
                "acknowledged_t_s": None, "acknowledged_by": None}
        elif p["id"] in self.reader_messages:
            self.reader_messages[p["id"]].update(acknowledged_t_s=_r(e.t_s, 3), acknowledged_by=p.get("who"))

    def _on_note(self, e: Entry, p: Mapping[str, Any]) -> None:
        self.notes.append({"t_s": _r(e.t_s, 3), "wall": e.wall, "text": p["text"], "who": p.get("who")})

    def _on_snapshot(self, e: Entry, p: Mapping[str, Any]) -> None:
        self.snapshots.append({"t_s": _r(e.t_s, 3), "wall": e.wall, "label": p.get("label"),
                               "stimulus_index": p.get("stimulus_index"), "who": p.get("who")})
        self._event(e, "snapshot", "Mark" + (f": {p['label']}" if p.get("label") else ""))

    def _on_link(self, e: Entry, p: Mapping[str, Any]) -> None:
        self._event(e, "link", f"Board link {p['event'].replace('_', ' ')}")

    def _on_engine(self, e: Entry, p: Mapping[str, Any]) -> None:
        if p["event"] == "state":  # the engine's periodic state snapshot: not an event for people
            detail = p.get("detail") if isinstance(p.get("detail"), Mapping) else {}
            proc = (detail.get("rules") or {}).get("procedure") if isinstance(detail.get("rules"), Mapping) else None
            if isinstance(proc, Mapping):
                self.procedure_state = dict(proc)
            return
        self.engine.append({"t_s": _r(e.t_s, 3), "wall": e.wall, "event": p["event"], "detail": p.get("detail")})
        self._event(e, "engine", f"Engine {p['event']}")

    def _on_storage(self, e: Entry, p: Mapping[str, Any]) -> None:
        self.storage.append({"t_s": _r(e.t_s, 3), "wall": e.wall, "event": p["event"], "message": p.get("message"),
                             "dropped": p.get("dropped"), "since": p.get("since")})
        self._event(e, "storage", f"Storage {p['event']}" + (f": {p['message']}" if p.get("message") else ""))

    # ------------------------------------------------------------------ output

    def _steps(self, side: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        proc_steps = ((self.procedure_state or {}).get("steps") or {}).get(side) or {}
        proc_lar = ((self.procedure_state or {}).get("laryngoscopy") or {}).get(side) or {}
        for step in PROCEDURE_ORDER:
            if step in LARYNGOSCOPY_STEPS:
                v = self.laryngoscopy.get((side, step))
                if v is None and proc_lar.get(step) is not None:
                    pv = proc_lar[step]
                    v = {"finding": pv.get("finding") if isinstance(pv, Mapping) else pv,
                         "t_s": pv.get("t_s") if isinstance(pv, Mapping) else None, "who": None, "comment": None}
                out[step] = v
                continue
            v = self.step_entries.get((side, step))
            if v is None and proc_steps.get(step):
                pv = dict(proc_steps[step])
                v = {k: pv.get(k) for k in ("t_s", "site", "source", "response", "amplitude_uV", "latency_ms",
                                            "onset_latency_ms", "set_mA", "delivered_mA", "pw_us",
                                            "stimulus_index")}
                v.update(how=f"procedure:{pv.get('how', '')}".rstrip(":"), who=None,
                         stimulus_seq=self.stim_seq.get(pv.get("stimulus_index")))
            if v is None and (side, step) in self.tagged:
                v = dict(self.tagged[(side, step)])
            if v is not None and v.get("stimulus_seq") is None and v.get("stimulus_index") is not None:
                v["stimulus_seq"] = self.stim_seq.get(v["stimulus_index"])
            out[step] = v
        return out

    def _mapping_from_procedure(self) -> None:
        """Mapping points kept only in the procedure state (no ``mapping`` entries)."""
        mapping = (self.procedure_state or {}).get("mapping") or {}
        for ep in self.episodes:
            if ep["kind"] != "loss_of_signal" or ep["mapping"]:
                continue
            for pt in mapping.get(ep["side"]) or []:
                if isinstance(pt, Mapping) and (pt.get("t_s") is None or pt["t_s"] >= ep["t_s"]):
                    ep["mapping"].append({"t_s": _r(pt.get("t_s"), 3), "position_mm": pt.get("position_mm"),
                                          "response": pt.get("response"), "amplitude_uV": pt.get("amplitude_uV")})

    def finish(self, generated_at: str | None) -> dict[str, Any]:
        self._mapping_from_procedure()
        case = dict(self.case)
        if not self.identified:
            for k in PERSONAL_FIELDS:
                if k in case:
                    case[k] = None
        planned = case.get("planned_sides") or []
        last = self.last
        duration = _r(last.t_s, 1) if last is not None else None
        sides: dict[str, Any] = {}
        for side in SIDES:
            steps = self._steps(side)
            v1, v2 = steps.get("V1"), steps.get("V2")
            ratio = None
            if v1 and v2 and v1.get("response") and v1.get("amplitude_uV"):
                ratio = round((v2.get("amplitude_uV") or 0.0) / v1["amplitude_uV"] * 100.0, 1) \
                    if v2.get("response") else 0.0
            r2p, r2d = steps.get("R2P"), steps.get("R2D")
            red = None
            if r2p and r2d and r2d.get("amplitude_uV"):
                red = round((r2d["amplitude_uV"] - (r2p.get("amplitude_uV") or 0.0)) / r2d["amplitude_uV"] * 100.0, 1)
            tr = self.trends[side]
            has_data = any(v is not None for v in steps.values()) or bool(tr["aps"]["t_s"]) or bool(tr["probe"])
            sides[side] = {"planned": side in planned, "has_data": has_data, "steps": steps,
                           "v2_of_v1_pct": ratio, "r2_reduction_pct": red,
                           "episodes": sum(1 for ep in self.episodes if ep["side"] == side)}
        trends = {}
        for side in SIDES:
            tr = self.trends[side]
            baselines = tr["baselines"]
            if not baselines and len(tr["aps"]["t_s"]) > 0:
                baselines = self._computed_baseline(tr["aps"])
            trends[side] = {"aps": tr["aps"] if tr["aps"]["t_s"] else None, "baselines": baselines,
                            "probe": tr["probe"]}
        doc = {
            "format": FORMAT,
            "generated": {"at": generated_at, "pseudonymised": not self.identified},
            "case": {
                **case,
                "case_id": last.case_id if last is not None else None,
                "opened": self.opened_wall,
                "closed": self.closed["wall"] if self.closed else None,
                "close_reason": self.closed["reason"] if self.closed else None,
                "duration_s": duration,
            },
            "journal": {"entries": self.n, "last_seq": last.seq if last else None,
                        "last_hash": last.hash if last else None, "open": self.closed is None,
                        "verified": None, "verify_problem": None},
            "settings": {**(self.settings or {"values": None, "source": None, "profile": None}),
                         "changes": self.setting_changes},
            "tube_check": self.tube_checks,
            "sides": sides,
            "trends": trends,
            "adverse_events": self.episodes,
            "alarms": list(self.alarms.values()),
            "staging": self.staging,
            "timeline": sorted(self.timeline, key=lambda it: (it["t_s"] if it["t_s"] is not None else 0.0)),
            "irritation": self.irritation,
            "cautery": {"episodes": sum(1 for c in self.cautery if c["state"] == "start"),
                        "entries": self.cautery},
            "stimuli": {k: self.stim_counts.get(k, 0) for k in ("total", "valid", "invalid", "responses",
                                                              "PROBE", "APS")},
            "emg_stream": self.emg,
            "notes": self.notes,
            "reader_messages": list(self.reader_messages.values()),
            "snapshots": self.snapshots,
            "engine": self.engine,
            "storage": self.storage,
            "signatures": [{"role": "Surgeon", "name": case.get("surgeon") if self.identified else None},
                           {"role": "Neuromonitoring / anaesthesia", "name": None}],
        }
        return doc

    def _computed_baseline(self, aps: Mapping[str, list]) -> list[dict[str, Any]]:
        n = 20
        if self.settings is not None:
            n = int(self.settings["values"].get("rules.aps_baseline_count", n))
        amps, lats, t_end = [], [], None
        for t, a, lat, resp in zip(aps["t_s"], aps["amplitude_uV"], aps["latency_ms"], aps["response"]):
            if resp and a is not None and lat is not None:
                amps.append(a)
                lats.append(lat)
                t_end = t
                if len(amps) == n:
                    break
        if len(amps) < n:
            return []
        return [{"t_s": t_end, "amplitude_uV": round(sum(amps) / n, 2), "latency_ms": round(sum(lats) / n, 3),
                 "number": None, "computed": True}]


def _better(new: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    """The procedure's rule: a response beats none; then the larger amplitude."""
    if bool(new["response"]) != bool(old["response"]):
        return bool(new["response"])
    return (new["amplitude_uV"] or 0.0) > (old["amplitude_uV"] or 0.0)
