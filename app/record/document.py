"""The standardised INMSG case document (``lnm-case/1``), built from journal entries only.

Owns: ``build_document`` (journal + case -> dict) and ``document_from_entries`` (the pure
core: an iterable of entries -> dict). The schema is described in ``CASE_FORMAT.md``.
May import: the standard library, ``app.format`` (every number and word), ``app.settings``
(setting units), ``app.record.journal``, ``app.record.entries``, ``app.record.closeout``
(missing steps), ``app.analysis.breathing`` (the breathing variation in words) and
``app.rules.procedure`` (the mapping classification, the same code as live).

A tube check is journaled when its impedances come back (breathing variation
``measuring``) and again when its breathing-variation window ends; the document shows
them as one check (``breathing_t_s``: when the breathing variation was complete).

Values are rounded once, by ``app.format`` (amplitudes 1 µV, latencies 0.01 ms,
percentages 1 %), so the JSON, the report and the screen show the same numbers. Texts
(the timeline, conclusions) are in words: no internal key or enum value. The case data
are those of ``case_opened`` with every later ``case.update`` applied, the anaesthesia
data (relaxant, its time, train-of-four) included.

Nothing here reads the engine's memory: whatever the document says, the journal says.
Every part is optional in the input: a case without APS, with one side, without L2 or
without any step still gives a complete document whose missing values are ``null``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from app import format as F
from app.analysis.breathing import side_text
from app.record.closeout import missing_steps
from app.record.entries import LARYNGOSCOPY_STEPS, PROCEDURE_ORDER, SIDES, STIM_STEPS
from app.record.journal import Entry
from app.settings import SCHEMA

FORMAT = "lnm-case/1"
ADVERSE_KINDS = ("loss_of_signal", "combined_event", "amplitude_decrease", "neuromuscular_blockade_suspected")
CONTINUED = "loss_of_signal_continued"  # the same loss-of-signal episode goes on: an interruption of it
BLOCKADE = "neuromuscular_blockade_suspected"  # one episode of both sides (``sides``)
SECRET_SETTINGS = ("ui.settings_pin",)  # never written into a document
PERSONAL_FIELDS = ("surgeon", "operator", "patient_name", "name", "birth_date", "hospital_number")

EVENT_TITLES = F.EVENT_WORDS
DEFAULT_THRESHOLD_UV = float(SCHEMA["analysis.event_threshold_uV"].default)  # below it only a lowered one responds
CASE_FIELDS = ("surgeon", "procedure", "planned_sides")
ANAESTHESIA_FIELDS = ("relaxant", "relaxant_time", "tof_count", "tof_ratio_pct")


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
    """The case document of a case's entries (in seq order)."""
    b = _Builder(identified)
    for e in entries:
        b.add(e)
    return b.finish(generated_at)


SIDE_WORDS = {"L": "left", "R": "right"}
MAP_EPISODE_FIELDS = ("t_s", "position_mm", "response", "amplitude_uV", "latency_ms", "set_mA", "delivered_mA")


def _breathing_measuring(bv: Any) -> bool:
    """A tube check's breathing variation whose window was still running."""
    return isinstance(bv, Mapping) and any(isinstance(v, Mapping) and v.get("status") == "measuring"
                                           for v in bv.values())


def _r(x: Any, nd: int) -> Any:
    return None if x is None else round(float(x), nd)


def _amp(x: Any) -> Any:
    return F.amplitude_uV(x)


def _lat(x: Any) -> Any:
    return F.latency_ms(x)


def _side_of_alarm(p: Mapping[str, Any]) -> str | None:
    if p.get("side") in SIDES:
        return p["side"]
    aid = p.get("alarm_id") or p.get("alarm") or ""
    key = aid.split(":", 1)[1] if ":" in aid else ""
    tail = key.rsplit("-", 1)[-1] if key else ""
    return tail if tail in SIDES else None


def _site_of_alarm(p: Mapping[str, Any]) -> str | None:
    if p.get("site"):
        return p["site"]
    aid = p.get("alarm_id") or p.get("alarm") or ""
    key = aid.split(":", 1)[1] if ":" in aid else ""
    site, _, side = key.rpartition("-")
    return site if side in SIDES and site else None


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
        self.anaesthesia: dict[str, Any] = {k: None for k in ANAESTHESIA_FIELDS}
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
        self.stim_brief: dict[int, dict[str, Any]] = {}
        self.stim_counts: dict[str, int] = defaultdict(int)
        self.trends = {s: {"aps": {"t_s": [], "amplitude_uV": [], "latency_ms": [], "response": []},
                           "probe": {}, "baselines": []} for s in SIDES}
        self.timeline: list[dict[str, Any]] = []
        self.rule_events: list[dict[str, Any]] = []
        self.episodes: list[dict[str, Any]] = []
        self.alarms: dict[str, dict[str, Any]] = {}
        self.staging: list[dict[str, Any]] = []
        self.irritation: list[dict[str, Any]] = []
        self.cautery: list[dict[str, Any]] = []
        self.notes: list[dict[str, Any]] = []
        self.snapshots: list[dict[str, Any]] = []
        self.storage: list[dict[str, Any]] = []
        self.engine: list[dict[str, Any]] = []
        self.mapping_points: dict[str, list[dict[str, Any]]] = {s: [] for s in SIDES}
        self.contralateral: dict[str, str] = {}
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
        self.case["tube"] = dict(p.get("tube") or {"type": None, "size_mm": None, "depth_cm": None})
        given = p.get("anaesthesia") if isinstance(p.get("anaesthesia"), Mapping) else p
        self._case_data({k: given.get(k) for k in ANAESTHESIA_FIELDS if given.get(k) is not None})
        self.opened_wall = e.wall

    def _case_data(self, data: Mapping[str, Any]) -> None:
        """case.start / case.update arguments into the case data (tube and anaesthesia too)."""
        for k, v in data.items():
            if k.startswith("tube_"):
                self.case.setdefault("tube", {})[k[5:]] = v
            elif k in ANAESTHESIA_FIELDS:
                self.anaesthesia[k] = v
            elif k in CASE_FIELDS:
                self.case[k] = v

    def _on_case_closed(self, e: Entry, p: Mapping[str, Any]) -> None:
        self.closed = {"t_s": _r(e.t_s, 3), "wall": e.wall, "reason": p.get("reason"), "who": p.get("who"),
                       "missing_steps": p.get("missing_steps") if isinstance(p.get("missing_steps"), list) else None}
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
              "unit": p.get("unit", ""), "who": p.get("who"), "default": p.get("default"),
              "relaxed": p.get("relaxed"), "confirmed": p.get("confirmed")}
        self.setting_changes.append(ch)
        unit = p.get("unit") or ""
        protected = ""
        if p.get("relaxed"):  # a protected limit (app.engine.limits) beyond its default
            protected = (f", beyond its default {F.setting_value(p.get('default'), unit)} "
                         + ("(confirmed)" if p.get("confirmed") else "(not asked)"))
        elif p.get("confirmed"):
            protected = " (confirmed: a related alarm was active)"
        self._event(e, "setting_changed", f"Setting changed: {F.setting_name(p['key'])} from "
                    f"{F.setting_value(p['old'], unit)} to {F.setting_value(p['new'], unit)}{protected}")

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
        verdict = "passed" if p["passed"] else ("failed, accepted" if p.get("override") else "FAILED")
        self._event(e, "tube_check", f"Tube check {verdict}" + (f": {p['message']}" if p.get("message") else ""))

    def _on_stimulus(self, e: Entry, p: Mapping[str, Any]) -> None:
        self.stim_seq[p["index"]] = e.seq
        self.stim_counts["total"] += 1
        self.stim_counts["valid" if p["valid"] else "invalid"] += 1
        self.stim_counts[p["source"]] += 1
        if p.get("response"):
            self.stim_counts["responses"] += 1
        side = p["side"]
        self.stim_brief[p["index"]] = {"seq": e.seq if "waveform" in p else None, "t_s": _r(p["t_s"], 3),
                                       "side": side, "valid": bool(p["valid"]),
                                       "site": p.get("site"), "source": p.get("source"),
                                       "response": bool(p.get("response")), "amplitude_uV": _amp(p.get("amplitude_uV")),
                                       "latency_ms": _lat(p.get("latency_ms")), "set_mA": p.get("set_mA"),
                                       "delivered_mA": p.get("delivered_mA"), "threshold_uV": p.get("threshold_uV")}
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
            series["amplitude_uV"].append(_amp(p.get("amplitude_uV")))
            series["latency_ms"].append(_lat(p.get("latency_ms")))
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
                "response": bool(p.get("response")), "amplitude_uV": _amp(p.get("amplitude_uV")),
                "latency_ms": _lat(p.get("latency_ms")), "onset_latency_ms": _lat(p.get("onset_latency_ms")),
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
             "response": p.get("response"), "amplitude_uV": _amp(p.get("amplitude_uV")),
             "latency_ms": _lat(p.get("latency_ms")), "onset_latency_ms": _lat(p.get("onset_latency_ms")),
             "set_mA": p.get("set_mA"), "delivered_mA": p.get("delivered_mA"), "pw_us": p.get("pw_us"),
             "stimulus_index": p.get("stimulus_index"), "stimulus_seq": None, "how": "step", "who": p.get("who"),
             "comment": p.get("comment"), "recorded_t_s": _r(e.t_s, 3)}
        idx = p.get("stimulus_index")
        if idx is not None:
            v["stimulus_seq"] = self.stim_seq.get(idx)
            brief = self.stim_brief.get(idx) or {}
            v["site"], v["source"] = brief.get("site"), brief.get("source")
            th = brief.get("threshold_uV")
            if v["response"] and th is not None and th < DEFAULT_THRESHOLD_UV and p.get("amplitude_uV") is not None \
                    and p["amplitude_uV"] < DEFAULT_THRESHOLD_UV:  # a response only the lowered threshold made
                v["lowered_threshold_uV"] = th
        self.step_entries[(p["side"], p["step"])] = v
        by = " with the step button" if "operator" in str(p.get("comment") or "") else ""
        self._event(e, "step", f"Step {p['step']} {F.side_word(p['side'])} ({F.STEP_WORDS.get(p['step'], '')}) "
                    f"recorded{by}: {_step_words(v)}", p["side"])

    def _on_laryngoscopy(self, e: Entry, p: Mapping[str, Any]) -> None:
        pairs = []
        if p.get("side") in SIDES and p.get("finding"):
            pairs.append((p["side"], p["finding"]))
        for side, key in (("L", "left"), ("R", "right")):
            if p.get(key):
                pairs.append((side, p[key]))
        changed = []
        for side, finding in pairs:
            before = (self.laryngoscopy.get((side, p["step"])) or {}).get("finding")
            if before == finding or (before is None and finding in ("not_assessed", "not_examined") and len(pairs) > 1):
                continue  # the other side, unchanged (the record repeats it)
            changed.append((side, finding))
            self.laryngoscopy[(side, p["step"])] = {"finding": finding, "t_s": _r(e.t_s, 3), "who": p.get("who"),
                                                    "comment": p.get("comment")}
        text = "; ".join(f"{F.side_word(s)} {F.finding_text(f)}" for s, f in changed or pairs)
        self._event(e, "laryngoscopy", f"{p['step']} ({F.STEP_WORDS.get(p['step'], 'laryngoscopy')}): {text}")

    def _on_procedure(self, e: Entry, p: Mapping[str, Any]) -> None:
        self.procedure_state = dict(p["state"])

    def _on_rule_event(self, e: Entry, p: Mapping[str, Any]) -> None:
        kind, side = p["kind"], p["side"]
        title = F.event_title(kind)
        detail = p.get("detail") or {}
        text = f"{title}, {F.site_side(p['site'], side)}{_event_detail(kind, detail)}"
        item = self._event(e, "rule_event", text, side, kind=kind, priority=p.get("priority"), site=p.get("site"))
        item["t_s"] = _r(p["t_s"], 3)
        self.rule_events.append({"t_s": _r(p["t_s"], 3), "kind": kind, "side": side, "site": p.get("site"),
                                 "priority": p.get("priority"), "stimulus_index": p.get("stimulus_index"),
                                 "detail": detail})
        if kind == "baseline_set" and detail.get("amplitude_uV") is not None and detail.get("source", "APS") == "APS":
            self.trends[side]["baselines"].append({"t_s": _r(p["t_s"], 3), "amplitude_uV": _amp(detail["amplitude_uV"]),
                                                   "latency_ms": _lat(detail.get("latency_ms")),
                                                   "number": detail.get("number")})
        if kind == CONTINUED and self._continue_episode(e, p, detail):
            return
        if kind in ADVERSE_KINDS or kind == CONTINUED:
            sides = [side]
            if kind == BLOCKADE and isinstance(detail.get("sides"), Mapping):
                sides = [s for s in SIDES if detail["sides"].get(s)] or [side]
            self.episodes.append({
                "kind": "loss_of_signal" if kind == CONTINUED else kind, "title": title, "side": side,
                "sides": sides, "site": p["site"], "priority": p.get("priority"),
                "t_s": _r(p["t_s"], 3), "wall": e.wall, "stimulus_index": p.get("stimulus_index"),
                "detail": detail, "acknowledged": None, "troubleshooting": [], "mapping": [], "los_type": None,
                "interruptions": [], "recovered_t_s": None, "recovery_s": None, "staging": [],
                "alarm_transitions": [],
            })
        elif kind == "signal_recovered":
            self._recovered(p, side, detail)

    def _continue_episode(self, e: Entry, p: Mapping[str, Any], detail: Mapping[str, Any]) -> bool:
        """A loss of signal again within the re-entry time: an interruption of its episode
        (re-opened if a recovery had closed it: the same alarm condition goes on). False
        when the record holds no episode of that site to continue."""
        ep = self._episode_for(p["side"], p["t_s"], ("loss_of_signal",), site=p["site"], strict=True)
        if ep is None:
            return False
        ep["interruptions"].append({
            "ended_t_s": _r(detail.get("interrupted_t_s"), 3), "resumed_t_s": _r(p["t_s"], 3),
            "interruption_s": _r(detail.get("interruption_s"), 1), "stimulus_index": p.get("stimulus_index")})
        ep["recovered_t_s"] = ep["recovery_s"] = None
        return True

    def _recovered(self, p: Mapping[str, Any], side: str, detail: Mapping[str, Any]) -> None:
        """A recovery closes the episodes of what it says recovered (``detail.recovered``:
        the loss of signal of its site, the amplitude decrease or combined event of its
        vagus, a neuromuscular blockade of both sides, whichever side recovered first)."""
        recovered = detail.get("recovered") if isinstance(detail.get("recovered"), list) else None
        for ep in self.episodes:
            if ep["recovered_t_s"] is not None:
                continue
            if recovered is None:  # older records: every episode of the side (a loss of signal of its site)
                hit = ep["side"] == side and (ep["site"] == p["site"] or ep["kind"] != "loss_of_signal")
            elif ep["kind"] == BLOCKADE:
                hit = BLOCKADE in recovered
            else:
                hit = ep["side"] == side and ep["site"] == p["site"] and ep["kind"] in recovered
            if hit:
                ep["recovered_t_s"] = _r(p["t_s"], 3)
                ep["recovery_s"] = _r(p["t_s"] - ep["t_s"], 1)

    def _episode_for(self, side: str | None, t_s: float, kinds: tuple[str, ...] = ADVERSE_KINDS,
                     site: str | None = None, strict: bool = False) -> dict | None:
        """The newest episode of ``kinds`` on ``side`` that began by ``t_s``; with ``site``,
        the newest of that site (else, unless ``strict``, the newest of any site)."""
        best = best_site = None
        for ep in self.episodes:
            if ep["kind"] in kinds and (side is None or side in ep.get("sides", [ep["side"]])) \
                    and ep["t_s"] <= t_s + 1e-6:
                best = ep
                if site is not None and ep["site"] == site:
                    best_site = ep
        if site is not None and (best_site is not None or strict):
            return best_site
        return best

    def _on_alarm(self, e: Entry, p: Mapping[str, Any]) -> None:
        aid = p.get("alarm_id") or p.get("alarm")
        kind = _alarm_kind(p)
        side = _side_of_alarm(p)
        tr = p["transition"]
        who = p.get("who")
        if aid:
            a = self.alarms.setdefault(aid, {"alarm_id": aid, "name": F.alarm_name(aid), "kind": kind, "side": side,
                                             "priority": p.get("priority"), "raised_t_s": None,
                                             "acknowledged_t_s": None, "acknowledged_by": None,
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
        msg = p.get("message") or (p.get("detail") or {}).get("message") or ""
        prio = f" ({F.words(F.PRIORITY_WORDS, p['priority'])} priority)" if p.get("priority") in ("high", "medium",
                                                                                                  "low") else ""
        verb = F.words(F.TRANSITION_WORDS, tr)
        if p.get("priority") == "info" and tr in ("raised", "raise", "notice"):
            verb = "notice"
        text = f"Alarm {verb}: {F.alarm_name(aid)}{prio}"
        if msg and tr in ("raised", "raise"):
            text += f". {msg}"
        if p.get("priority") != "info":  # an information notice repeats its rule event
            self._event(e, "alarm", text, side, transition=tr, alarm_id=aid)
        if kind in ADVERSE_KINDS:
            ep = self._episode_for(side, e.t_s, (kind,), site=_site_of_alarm(p))
            if ep is not None:
                ep["alarm_transitions"].append({"t_s": _r(e.t_s, 3), "transition": tr, "who": who})
                if tr in ("acknowledged", "ack") and ep["acknowledged"] is None:
                    ep["acknowledged"] = {"t_s": _r(e.t_s, 3), "who": who,
                                          "after_s": _r(e.t_s - ep["t_s"], 1)}

    def _on_troubleshooting(self, e: Entry, p: Mapping[str, Any]) -> None:
        side = p.get("side")
        item = {"t_s": _r(e.t_s, 3), "check": p["check"], "question": p.get("question"), "answer": p["answer"],
                "who": p.get("who")}
        if p["check"] == "contralateral_vagus" and side in SIDES:
            self.contralateral[side] = p["answer"]
        ep = self._episode_for(side, e.t_s, ("loss_of_signal",)) or self._episode_for(side, e.t_s)
        if ep is not None:
            ep["troubleshooting"].append(item)
        by = " (answered by the monitor)" if p.get("who") == "monitor" else ""
        where = f", {F.side_word(side)}" if side in SIDES else ""
        if p["check"] == "verdict":
            reason = f" ({p['question']})" if p.get("question") else ""
            text = f"Surgeon's verdict{where}: {F.words(F.ANSWER_WORDS, p['answer'])}{reason}"
        else:
            text = (f"Troubleshooting{where}: {F.words(F.CHECK_WORDS, p['check'])}? "
                    f"{F.words(F.ANSWER_WORDS, p['answer'])}{by}")
        self._event(e, "troubleshooting", text, side)

    def _map_point(self, e: Entry, side: str, position: Any, response: Any, amplitude: Any, label: Any,
                   measured: Mapping[str, Any] | None = None) -> None:
        """A mapping point of the side's RLN: distance, response, and what was measured at
        it (``measured``: the engine's point, with the amplitude, latency, set and
        delivered current of the stimulus it took)."""
        pt = measured if isinstance(measured, Mapping) else {}
        if amplitude is None:
            amplitude = pt.get("amplitude_uV")
        item = {"t_s": _r(e.t_s, 3), "position_mm": F.position_mm(position), "response": bool(response),
                "amplitude_uV": _amp(amplitude), "latency_ms": _lat(pt.get("latency_ms")) if response else None,
                "set_mA": pt.get("set_mA"), "delivered_mA": pt.get("delivered_mA"),
                "stimulus_index": pt.get("stimulus_index"), "note": pt.get("note") or None, "label": label or None}
        self.mapping_points.setdefault(side, []).append(item)
        ep = self._episode_for(side, e.t_s, ("loss_of_signal",), site="RLN")
        if ep is not None:
            ep["mapping"].append({k: item[k] for k in MAP_EPISODE_FIELDS})
        lab = f" ({label})" if label else ""
        amp = f", {F.amp_text(amplitude)}" if amplitude is not None else ""
        if item["latency_ms"] is not None:
            amp += f", {F.lat_text(item['latency_ms'])}"
        if item["set_mA"] is not None:
            amp += f" at {F.current_text(item['set_mA'], item['delivered_mA'])}"
        self._event(e, "mapping", f"Mapping {F.side_word(side)} RLN at {F.mm_text(position)}{lab}: "
                                  f"{'response' if response else 'no response'}{amp}", side)

    def _on_mapping(self, e: Entry, p: Mapping[str, Any]) -> None:
        self._map_point(e, p["side"], p["position_mm"], p["response"], p.get("amplitude_uV"), p.get("label"), p)

    def _on_los_type(self, e: Entry, p: Mapping[str, Any]) -> None:
        detail = p.get("detail") if isinstance(p.get("detail"), Mapping) else {}
        ep = self._episode_for(p["side"], e.t_s, ("loss_of_signal",), site=detail.get("site") or "RLN")
        words = F.LOS_TYPE_WORDS.get(p["los_type"], str(p["los_type"]))
        if ep is not None:
            ep["los_type"] = {"type": p["los_type"], "t_s": _r(e.t_s, 3), "who": p.get("who"),
                              "detail": p.get("detail")}
        between, proximal = detail.get("lesion_between_mm"), detail.get("lesion_proximal_to_mm")
        if isinstance(between, list) and len(between) == 2:
            words += f", lesion between {F.mm_text(between[0])} and {F.mm_text(between[1])} from the laryngeal entry"
        elif proximal is not None:
            words += f", lesion proximal to {F.mm_text(proximal)} from the laryngeal entry"
        self._event(e, "los_type", f"Loss of signal, {F.site_side(detail.get('site') or 'RLN', p['side'])}: "
                    f"{words}", p["side"])

    def _on_staging(self, e: Entry, p: Mapping[str, Any]) -> None:
        item = {"t_s": _r(e.t_s, 3), "wall": e.wall, "recommendation": p["recommendation"],
                "decision": p.get("decision"), "reason": p.get("reason"), "who": p.get("who"), "side": p.get("side")}
        self.staging.append(item)
        ep = self._episode_for(p.get("side"), e.t_s, ("loss_of_signal",))
        if ep is not None:
            ep["staging"].append(item)
        if p.get("decision"):
            text = f"Staging decision: {F.words(F.DECISION_WORDS, p['decision'])}"
            if p.get("reason"):
                text += f" ({p['reason']})"
        else:
            text = f"Staging recommended: {p['recommendation']}"
        self._event(e, "staging", text, p.get("side"))

    def _on_irritation(self, e: Entry, p: Mapping[str, Any]) -> None:
        self.irritation.append({"onset_s": _r(p["onset_s"], 3), "side": p["side"], "duration_s": _r(p["duration_s"], 3),
                                "peak_uV": _amp(p["peak_uV"]), "kind": p.get("kind"), "channel": p.get("channel"),
                                "rms_uV": _r(p.get("rms_uV"), 1)})

    def _on_cautery(self, e: Entry, p: Mapping[str, Any]) -> None:
        self.cautery.append({"t_s": _r(e.t_s, 3), "state": p["state"], "duration_s": p.get("duration_s")})

    def _on_operator(self, e: Entry, p: Mapping[str, Any]) -> None:
        detail = p.get("detail")
        d = detail if isinstance(detail, Mapping) else {}
        action = p["action"]
        if action in ("case.start", "case.update"):
            self._case_data(d)
        if action == "mapping.result" and d.get("side") in SIDES:
            self._map_point(e, d["side"], d.get("position_mm"), d.get("response"), d.get("amplitude_uV"),
                            d.get("label"), d.get("point"))
            return
        if action == "mapping.clear" and d.get("side") in SIDES:
            self.mapping_points[d["side"]] = []
        if action == "case.close" or (action == "step.tag" and d.get("which") != "next"):
            return  # the case_closed and step entries that follow say it
        text = F.action_text(action, d)
        if isinstance(detail, str) and detail:
            text += f" ({detail})"
        self._event(e, "operator", text, d.get("side") if d.get("side") in SIDES else None, action=action)

    def _on_note(self, e: Entry, p: Mapping[str, Any]) -> None:
        self.notes.append({"t_s": _r(e.t_s, 3), "wall": e.wall, "text": p["text"], "who": p.get("who")})

    def _on_snapshot(self, e: Entry, p: Mapping[str, Any]) -> None:
        self.snapshots.append({"t_s": _r(e.t_s, 3), "wall": e.wall, "label": p.get("label"),
                               "stimulus_index": p.get("stimulus_index"), "who": p.get("who")})
        self._event(e, "snapshot", "Mark" + (f": {p['label']}" if p.get("label") else ""))

    def _on_link(self, e: Entry, p: Mapping[str, Any]) -> None:
        self._event(e, "link", f"Board link: {F.words(LINK_WORDS, p['event'])}")

    def _on_engine(self, e: Entry, p: Mapping[str, Any]) -> None:
        if p["event"] == "state":  # the engine's periodic state snapshot: not an event for people
            detail = p.get("detail") if isinstance(p.get("detail"), Mapping) else {}
            proc = (detail.get("rules") or {}).get("procedure") if isinstance(detail.get("rules"), Mapping) else None
            if isinstance(proc, Mapping):
                self.procedure_state = dict(proc)
            return
        self.engine.append({"t_s": _r(e.t_s, 3), "wall": e.wall, "event": p["event"], "detail": p.get("detail")})
        detail = p.get("detail") if isinstance(p.get("detail"), Mapping) else {}
        if p["event"] == "self_test" and detail.get("summary"):  # what was read back, what the nurse confirmed
            when = " (before the case)" if detail.get("before_case") else ""
            self._event(e, "engine", f"Monitor: {detail['summary']}{when}")
            return
        self._event(e, "engine", f"Monitor: {F.words(ENGINE_WORDS, p['event'])}")

    def _on_storage(self, e: Entry, p: Mapping[str, Any]) -> None:
        self.storage.append({"t_s": _r(e.t_s, 3), "wall": e.wall, "event": p["event"], "message": p.get("message"),
                             "dropped": p.get("dropped"), "since": p.get("since")})
        self._event(e, "storage", f"Case record storage: {F.words(STORAGE_WORDS, p['event'])}"
                    + (f": {p['message']}" if p.get("message") else ""))

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
                v = {k: pv.get(k) for k in ("t_s", "site", "source", "response", "set_mA", "delivered_mA", "pw_us",
                                            "stimulus_index")}
                v.update(amplitude_uV=_amp(pv.get("amplitude_uV")), latency_ms=_lat(pv.get("latency_ms")),
                         onset_latency_ms=_lat(pv.get("onset_latency_ms")),
                         how=f"procedure:{pv.get('how', '')}".rstrip(":"), who=None,
                         stimulus_seq=self.stim_seq.get(pv.get("stimulus_index")))
            if v is None and (side, step) in self.tagged:
                v = dict(self.tagged[(side, step)])
            if v is not None and v.get("stimulus_seq") is None and v.get("stimulus_index") is not None:
                v["stimulus_seq"] = self.stim_seq.get(v["stimulus_index"])
            out[step] = v
        return out

    def _mapping(self, side: str) -> dict[str, Any]:
        """Mapping points of a side with the type and the lesion location (the procedure's rule)."""
        from app.rules.procedure import Procedure

        points = list(self.mapping_points.get(side) or [])
        state = self.procedure_state or {}
        if not points:  # kept only in the procedure state (journals without mapping entries)
            points = [{"t_s": _r(pt.get("t_s"), 3), "position_mm": F.position_mm(pt.get("position_mm")),
                       "response": bool(pt.get("response")), "amplitude_uV": _amp(pt.get("amplitude_uV")),
                       "latency_ms": _lat(pt.get("latency_ms")) if pt.get("response") else None,
                       "set_mA": pt.get("set_mA"), "delivered_mA": pt.get("delivered_mA"),
                       "stimulus_index": pt.get("stimulus_index"), "note": pt.get("note") or None,
                       "label": pt.get("label") or None}
                      for pt in (state.get("mapping") or {}).get(side) or [] if isinstance(pt, Mapping)]
        proc = Procedure()
        for pt in points:
            if pt.get("position_mm") is not None:
                proc.add_mapping_point(side, pt["position_mm"], bool(pt["response"]), pt.get("t_s") or 0.0)
        contra = self.contralateral.get(side)
        if contra is not None:
            proc.on_loss(side, "RLN", 0.0, None)
            proc.answer(side, "contralateral_vagus", contra, 0.0)
        m = proc.mapping(side)
        return {"points": sorted(points, key=lambda x: x.get("position_mm") or 0.0), "site": "RLN", "type": m["type"],
                "lesion_between_mm": m["lesion_between_mm"], "lesion_proximal_to_mm": m["lesion_proximal_to_mm"],
                "silent_distal_mm": m["silent_distal_mm"], "classification": m["classification"],
                "text": m["message"]}

    def _mapping_into_episodes(self, mapping: Mapping[str, Any]) -> None:
        """Points kept only in the procedure state go to the side's RLN loss of signal."""
        for side in SIDES:
            if any(ep["mapping"] for ep in self.episodes if ep["side"] == side):
                continue
            for pt in mapping[side]["points"]:
                ep = self._episode_for(side, pt["t_s"] if pt.get("t_s") is not None else float("inf"),
                                       ("loss_of_signal",), site="RLN")
                if ep is not None:
                    ep["mapping"].append({k: pt.get(k) for k in MAP_EPISODE_FIELDS})

    def _overlays(self, sides: Mapping[str, Any]) -> None:
        """The waveforms a reader compares: each adverse event's stimulus over the baseline
        stimulus of its site and side."""
        for ep in self.episodes:
            ep["stimulus_seq"] = (self.stim_brief.get(ep.get("stimulus_index")) or {}).get("seq")
            ep["baseline"] = self._baseline_for(ep)

    def _baseline_for(self, ep: Mapping[str, Any]) -> dict[str, Any] | None:
        best = None
        for ev in self.rule_events:
            if ev["kind"] == "baseline_set" and ev["side"] == ep["side"] and ev["site"] == ep["site"] \
                    and ev["t_s"] <= ep["t_s"] and ev.get("stimulus_index") is not None:
                best = ev
        if best is None:
            return None
        brief = self.stim_brief.get(best["stimulus_index"]) or {}
        d = best["detail"] or {}
        return {"t_s": best["t_s"], "stimulus_index": best["stimulus_index"], "stimulus_seq": brief.get("seq"),
                "source": d.get("source"), "how": d.get("how"),
                "amplitude_uV": _amp(d.get("amplitude_uV")), "latency_ms": _lat(d.get("latency_ms"))}

    def finish(self, generated_at: str | None) -> dict[str, Any]:
        case = dict(self.case)
        case["anaesthesia"] = dict(self.anaesthesia)
        if not self.identified:
            for k in PERSONAL_FIELDS:
                if k in case:
                    case[k] = None
        planned = case.get("planned_sides") or []
        last = self.last
        duration = _r(last.t_s, 1) if last is not None else None
        mapping = {side: self._mapping(side) for side in SIDES}
        self._mapping_into_episodes(mapping)
        sides: dict[str, Any] = {}
        for side in SIDES:
            steps = self._steps(side)
            tr = self.trends[side]
            has_data = any(v is not None for v in steps.values()) or bool(tr["aps"]["t_s"]) or bool(tr["probe"])
            sides[side] = {"planned": side in planned, "has_data": has_data, "steps": steps,
                           "v2_of_v1_pct": _v2_of_v1(steps), "r2_reduction_pct": _r2_reduction(steps),
                           "episodes": sum(1 for ep in self.episodes if side in ep.get("sides", [ep["side"]])),
                           "events": _event_counts([ev for ev in self.rule_events if ev["side"] == side]),
                           "mapping": mapping[side]}
        self._overlays(sides)
        closeout = self._closeout(planned, sides)
        for side in SIDES:
            sides[side]["missing_steps"] = [m for m in closeout["missing"] if m["side"] == side]
            sides[side]["conclusion"] = _conclusion(side, sides[side], self.episodes, self.stim_brief,
                                                    postponed=_postponed(side, planned, self.staging))
        trends = {}
        for side in SIDES:
            tr = self.trends[side]
            baselines = tr["baselines"]
            if not baselines and len(tr["aps"]["t_s"]) > 0:
                baselines = self._computed_baseline(tr["aps"])
            trends[side] = {"aps": tr["aps"] if tr["aps"]["t_s"] else None, "baselines": baselines,
                            "probe": tr["probe"],
                            "events": [{"t_s": ev["t_s"], "kind": ev["kind"], "site": ev["site"],
                                        "priority": ev["priority"]}
                                       for ev in self.rule_events if ev["side"] == side
                                       and ev["kind"] != "baseline_set"]}
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
            "events": _event_counts(self.rule_events),
            "closeout": closeout,
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
            "snapshots": self.snapshots,
            "engine": self.engine,
            "storage": self.storage,
            "signatures": [{"role": "Surgeon", "name": case.get("surgeon") if self.identified else None},
                           {"role": "Neuromonitoring / anaesthesia", "name": None}],
        }
        return doc

    def _closeout(self, planned: list[str], sides: Mapping[str, Any]) -> dict[str, Any]:
        """The steps missing per planned side, with the reasons given when the case was closed."""
        recorded = {side: sides[side]["steps"] for side in SIDES}
        computed = missing_steps(planned, recorded)
        asked = self.closed is not None and self.closed.get("missing_steps") is not None
        reasons = {}
        if asked:
            for m in self.closed["missing_steps"]:
                if isinstance(m, Mapping):
                    reasons[(m.get("side"), m.get("step"))] = m.get("reason")
        missing = [{**m, "reason": reasons.get((m["side"], m["step"]))} for m in computed]
        return {"asked": asked, "missing": missing}

    def _computed_baseline(self, aps: Mapping[str, list]) -> list[dict[str, Any]]:
        n = 20
        if self.settings is not None:
            n = int(self.settings["values"].get("rules.aps_baseline_count", n))
        amps, lats, t_end = [], [], None
        for t, a, lat, resp in zip(aps["t_s"], aps["amplitude_uV"], aps["latency_ms"], aps["response"], strict=True):
            if resp and a is not None and lat is not None:
                amps.append(a)
                lats.append(lat)
                t_end = t
                if len(amps) == n:
                    break
        if len(amps) < n:
            return []
        return [{"t_s": t_end, "amplitude_uV": _amp(sum(amps) / n), "latency_ms": _lat(sum(lats) / n),
                 "number": None, "computed": True}]


LINK_WORDS = {"connected": "connected", "lost": "lost", "reconnected": "reconnected", "board_fault": "board fault",
              "capabilities": "board identified", "nack": "command refused by the board",
              "board_status": "board status changed", "host_silent": "board stopped (host silent)"}
ENGINE_WORDS = {"started": "started", "case_started": "case started", "resumed": "resumed after an interruption",
                "fault": "fault (stimulation stopped)", "stopped": "stopped", "self_test": "self-test",
                "audio_failure": "audio output failed", "audio_recovered": "audio output works again"}
STORAGE_WORDS = {"problem": "problem", "recovered": "working again", "rescued": "entries rescued"}


def _step_words(v: Mapping[str, Any]) -> str:
    """``593 µV, 7.83 ms at 1.00 mA (delivered 1.01 mA)`` / ``no response (43 µV) at ...``."""
    if v.get("response") is False:
        what = f"no response ({F.amp_text(v.get('amplitude_uV'))})"
    else:
        what = f"{F.amp_text(v.get('amplitude_uV'))}, {F.lat_text(v.get('latency_ms'))}"
        if v.get("lowered_threshold_uV") is not None:
            what += f" (response at the lowered threshold of {F.amp_text(v['lowered_threshold_uV'])})"
    cur = F.current_text(v.get("set_mA"), v.get("delivered_mA"), none="")
    return what + (f" at {cur}" if cur else "")


def _event_detail(kind: str, d: Mapping[str, Any]) -> str:
    """The values behind a rule event, in words."""
    if kind == "loss_of_signal":
        return (f": {F.amp_text(d.get('amplitude_uV'))} at "
                f"{F.current_text(d.get('set_mA'), d.get('delivered_mA'))}"
                + (f", {F.pct_text(d.get('pct_of_baseline'))} of baseline" if d.get("pct_of_baseline") is not None
                   else ""))
    if kind in ("combined_event", "amplitude_decrease"):
        return (f": amplitude {F.pct_text(d.get('amplitude_pct'))}, latency {F.pct_text(d.get('latency_pct'))} "
                "of baseline")
    if kind == "signal_recovered":
        return (f" after {F.duration(d.get('time_since_loss_s'))}: {F.amp_text(d.get('amplitude_uV'))}"
                + (f" ({F.pct_text(d.get('pct_of_baseline'))} of baseline)" if d.get("pct_of_baseline") is not None
                   else ""))
    if kind == "no_current":
        return f": {F.current_text(d.get('set_mA'), d.get('delivered_mA'))}"
    if kind == "baseline_set":
        return f": {F.amp_text(d.get('amplitude_uV'))}, {F.lat_text(d.get('latency_ms'))}"
    if kind == "poor_baseline":
        return f": {F.amp_text(d.get('amplitude_uV'))} (below {F.amp_text(d.get('limit_uV'))})"
    if kind == "loss_of_signal_continued":
        return (f": {F.amp_text(d.get('amplitude_uV'))} at {F.current_text(d.get('set_mA'), d.get('delivered_mA'))}; "
                f"the episode of {F.clock(d.get('episode_t_s'))} goes on (responses for "
                f"{F.duration(d.get('interruption_s'))} in between)")
    if kind == "neuromuscular_blockade_suspected":
        sides = d.get("sides") if isinstance(d.get("sides"), Mapping) else {}
        parts = [f"{F.side_word(s)} {F.pct_text(v.get('amplitude_pct'))}" for s, v in sides.items()
                 if isinstance(v, Mapping)]
        return (": both sides fell with stable latency" + (f" (amplitude {', '.join(parts)} of reference)"
                                                          if parts else "")
                + "; check train-of-four and relaxant with the anaesthetist")
    if kind == "nonrecurrent_nerve_suspected":
        return f": latency {F.lat_text(d.get('latency_ms'))} (below {F.lat_text(d.get('limit_ms'))})"
    return ""


def _v2_of_v1(steps: Mapping[str, Any]) -> Any:
    v1, v2 = steps.get("V1"), steps.get("V2")
    if v1 and v2 and v1.get("response") and v1.get("amplitude_uV"):
        return F.percent((v2.get("amplitude_uV") or 0.0) / v1["amplitude_uV"] * 100.0) if v2.get("response") else 0
    return None


def _r2_reduction(steps: Mapping[str, Any]) -> Any:
    r2p, r2d = steps.get("R2P"), steps.get("R2D")
    if r2p and r2d and r2d.get("amplitude_uV"):
        return F.percent((r2d["amplitude_uV"] - (r2p.get("amplitude_uV") or 0.0)) / r2d["amplitude_uV"] * 100.0)
    return None


def _event_counts(events: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Every rule event counted by priority and by kind (the summary's ``events``)."""
    by_kind: dict[str, int] = defaultdict(int)
    by_priority: dict[str, int] = {p: 0 for p in F.PRIORITY_ORDER}
    for ev in events:
        by_kind[ev["kind"]] += 1
        by_priority[ev.get("priority") or "info"] = by_priority.get(ev.get("priority") or "info", 0) + 1
    return {"total": sum(by_kind.values()), "by_priority": by_priority, "by_kind": dict(by_kind)}


def _postponed(side: str, planned: list[str], staging: list[Mapping[str, Any]]) -> bool:
    """The second planned side, postponed by the surgeon's staging decision."""
    decided = [x for x in staging if x.get("decision")]
    return (len(planned) == 2 and side == planned[1] and bool(decided)
            and decided[-1]["decision"] == "postpone_second_side")


def _conclusion(side: str, s: Mapping[str, Any], episodes: list[dict[str, Any]],  # noqa: C901 (one verdict)
                stims: Mapping[int, Mapping[str, Any]], postponed: bool = False) -> dict[str, Any]:
    """How the side's nerve ended the case: the final signal status, compared with L2."""
    eps = [ep for ep in episodes if side in ep.get("sides", [ep["side"]])]
    open_eps = [ep for ep in eps if ep["recovered_t_s"] is None]
    los_open = [ep for ep in open_eps if ep["kind"] == "loss_of_signal"]
    steps = s["steps"]
    v2 = steps.get("V2")
    if los_open:
        ep = los_open[0]
        status = "lost"
        text = f"Loss of signal ({F.site_side(ep['site'], side)} at {F.clock(ep['t_s'])}), not recovered"
        lt = (s.get("mapping") or {}).get("type")
        if lt:
            text += f"; {F.LOS_TYPE_WORDS.get(lt, '')}"
            between = (s.get("mapping") or {}).get("lesion_between_mm")
            if between:
                text += f", lesion between {F.mm_text(between[0])} and {F.mm_text(between[1])} from the larynx"
    elif open_eps:
        ep = open_eps[0]
        status = "decreased"
        text = f"{F.event_title(ep['kind'])} ({F.site_side(ep['site'], side)} at {F.clock(ep['t_s'])}), not recovered"
    elif eps:
        status = "recovered"
        last = max(eps, key=lambda e: e["t_s"])
        text = (f"{F.event_title(last['kind'])} at {F.clock(last['t_s'])}, recovered after "
                f"{F.duration(last['recovery_s'])}")
    elif postponed:
        status = "postponed"
        text = "Not operated: the second side was postponed (staging decision)"
    elif v2 and v2.get("response"):
        status = "intact"
        text = "Signal intact at the end (V2 response)"
    elif s["has_data"]:
        status = "intact" if _responded_last(side, stims) else "unknown"
        text = ("Responses present to the end; V2 not recorded" if status == "intact"
                else "No response at the last stimuli; V2 not recorded")
    else:
        status = "not_monitored"
        text = "Not monitored" + ("" if s["planned"] else " (side not planned)")
    if v2 and v2.get("response") is False and status in ("lost", "decreased"):
        text += f"; V2 no response ({F.amp_text(v2.get('amplitude_uV'))})"
    elif s.get("v2_of_v1_pct") is not None:
        text += f"; V2 {F.pct_text(s['v2_of_v1_pct'])} of V1"
    l2 = (steps.get("L2") or {}).get("finding")
    agreement = None
    if l2 and l2 not in ("not_examined", "not_assessed"):
        impaired = l2 in F.FINDING_IMPAIRED
        if status in ("lost", "decreased"):
            agreement = "consistent (true positive)" if impaired else "not consistent: normal mobility after a loss " \
                                                                      "of signal (false positive)"
        elif status in ("intact", "recovered"):
            agreement = "not consistent: impaired mobility with an intact signal (false negative)" if impaired \
                else "consistent (true negative)"
        text += f". L2: {F.finding_text(l2)}" + (f", {agreement}" if agreement else "")
    else:
        text += ". L2 not recorded"
    return {"status": status, "text": text, "l2": l2, "l2_agreement": agreement,
            "v2_of_v1_pct": s.get("v2_of_v1_pct")}


def _responded_last(side: str, stims: Mapping[int, Mapping[str, Any]]) -> bool:
    """Whether the side's last valid vagal or RLN stimulus gave a response."""
    for idx in sorted(stims, reverse=True):
        st = stims[idx]
        if st.get("side") == side and st.get("valid") and st.get("site") in ("VAGUS", "RLN"):
            return bool(st.get("response"))
    return False


def _better(new: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    """The procedure's rule: a response beats none; then the larger amplitude."""
    if bool(new["response"]) != bool(old["response"]):
        return bool(new["response"])
    return (new["amplitude_uV"] or 0.0) > (old["amplitude_uV"] or 0.0)
