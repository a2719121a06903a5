"""The INMSG procedure model: steps, laryngoscopy, LOS troubleshooting, mapping, staging.

Owns: what the standard procedure (L1 - V1 - S1 - R1 - R2 - S2 - V2 - L2, plus R2P/R2D)
recorded per side, the planned sides and their order, the loss-of-signal troubleshooting
sequence and its conclusion, nerve mapping and its type 1 / type 2 classification, the
R2p/R2d reduction, and the staging recommendation after a confirmed, unrecovered loss on
the first side of a bilateral operation, with the surgeon's decision.
May import: the standard library and ``app.model``. Pure: no clock, no I/O; every
mutation takes the time (``t_s``, seconds of the case) from its caller. The whole state
is plain data: ``to_dict()`` is JSON-serialisable and ``Procedure.from_dict`` restores it.

Step values
    A measurement tagged with a step (``Stimulus.step``) is offered to the step of its
    side: among the valid tagged measurements, a response beats no response, and a larger
    amplitude beats a smaller one (the best contact shows the nerve's function; one weak
    touch must not hide it). ``count`` says how many tagged measurements were seen. An
    explicit operator capture ("tag this response as step X", ``how = "operator"``)
    replaces the value and is not replaced by later tagged stimuli until the operator
    clears or captures the step again.

Troubleshooting (one record per loss-of-signal episode of a side, opened by the rule
engine; later losses on the same side join the open record). Checks in INMSG order, each
answered "yes" / "no" (yes = this is fine / present), by the operator or the monitor:

    check               | question                                             | by monitor
    current_delivered   | is the current delivered as set (measured vs set)?   | yes when measured
    leads_ok            | probe, return and ground leads connected?            |
    field_dry           | is the field dry (fluid shunts current)?             |
    laryngeal_twitch    | laryngeal twitch palpable on stimulation?            |
    contralateral_vagus | does the contralateral vagus respond?                | yes on a response
    tube_position_ok    | tube depth and rotation correct (laryngoscope)?      |
    secretions_ok       | no saliva / secretions on the electrodes?            |
    nmb_ok              | train-of-four normal (no neuromuscular blockade)?    |
    nonrecurrent        | non-recurrent nerve suspected (right side)?          |

    Conclusion (first rule that applies):

    1. current_delivered, leads_ok or field_dry answered "no" -> ``stimulation_problem``:
       fix the stimulation and stimulate again (not a loss of signal).
    2. nmb_ok "no" -> ``neuromuscular_blockade`` (both sides depressed; wait, re-test).
    3. contralateral_vagus "no" -> ``system_fault_likely``: no response on the healthy
       side either points to the recording chain or to blockade, not to this nerve.
    4. laryngeal_twitch "yes" -> ``recording_problem_likely``: the nerve conducts and the
       muscle contracts, but the EMG does not show it (tube, electrodes, cables).
    5. tube_position_ok or secretions_ok "no" -> ``recording_problem_likely``.
    6. current_delivered "yes", laryngeal_twitch "no" and contralateral_vagus "yes" ->
       ``true_los``: confirmed; map the nerve (type 1 / type 2).
    7. otherwise ``open``, with the next unanswered check in INMSG order.

    The surgeon may override with a verdict (``true_los`` / ``not_true_los`` and a
    reason), which wins over rules 1-7 and is recorded. ``nonrecurrent_suspected`` is
    flagged on the right side when the operator says so or when V1 is absent on the right
    but present on the left.

Mapping (per side): while the side's loss is confirmed (``true_los``) and not recovered,
``mapping_active`` is true and the rule engine takes probe stimuli of that RLN as mapping
(no loss, no recovery); the vagus of the side still recovers it. Points (position in mm from the laryngeal entry, 0 = most distal;
response yes/no). Any responding point -> type 1 (segmental; the lesion lies between the
most proximal responding point distal to the first silent point and that silent point).
No responding point -> type 2 (global) when the contralateral vagus responds; with the
contralateral vagus silent -> ``system_fault_suspected``; unknown -> ``undetermined``.

Staging: while the plan is bilateral and the first planned side has a troubleshooting
record that is confirmed (conclusion or verdict ``true_los``) and not recovered, the
recommendation "consider postponing the second side" (INMSG 2018 Part I) is active. Its
start, the end of its basis (recovery, a changed verdict or plan) and the surgeon's
decision with the reason are kept in ``staging`` for the record.
"""

from __future__ import annotations

import copy
import enum
import json
import math
from typing import Any, Iterable, Mapping

from app.model import Measurement, Side, Site, Step

FORMAT = "lnm-procedure/1"


class Finding(str, enum.Enum):
    """Laryngoscopy finding for one vocal fold (L1 before, L2 after surgery)."""

    NORMAL = "normal"
    PARESIS = "paresis"
    PALSY = "palsy"
    NOT_EXAMINED = "not_examined"


class Check(str, enum.Enum):
    CURRENT_DELIVERED = "current_delivered"
    LEADS_OK = "leads_ok"
    FIELD_DRY = "field_dry"
    LARYNGEAL_TWITCH = "laryngeal_twitch"
    CONTRALATERAL_VAGUS = "contralateral_vagus"
    TUBE_POSITION_OK = "tube_position_ok"
    SECRETIONS_OK = "secretions_ok"
    NMB_OK = "nmb_ok"
    NONRECURRENT = "nonrecurrent"


CHECK_QUESTIONS: dict[Check, str] = {
    Check.CURRENT_DELIVERED: "Is the current delivered as set (measured vs set)?",
    Check.LEADS_OK: "Are the probe, return and ground leads connected?",
    Check.FIELD_DRY: "Is the field dry (fluid shunts current)?",
    Check.LARYNGEAL_TWITCH: "Is a laryngeal twitch palpable on stimulation?",
    Check.CONTRALATERAL_VAGUS: "Does the contralateral vagus respond?",
    Check.TUBE_POSITION_OK: "Are tube depth and rotation correct (laryngoscope)?",
    Check.SECRETIONS_OK: "Are the electrodes free of saliva and secretions?",
    Check.NMB_OK: "Is the train-of-four normal (no neuromuscular blockade)?",
    Check.NONRECURRENT: "Is a non-recurrent laryngeal nerve suspected?",
}

# The INMSG order in which the next unanswered check is proposed (``nonrecurrent`` is
# asked only on the right side).
CHECK_ORDER: tuple[Check, ...] = (
    Check.CURRENT_DELIVERED,
    Check.LEADS_OK,
    Check.FIELD_DRY,
    Check.LARYNGEAL_TWITCH,
    Check.CONTRALATERAL_VAGUS,
    Check.TUBE_POSITION_OK,
    Check.SECRETIONS_OK,
    Check.NMB_OK,
    Check.NONRECURRENT,
)


class Conclusion(str, enum.Enum):
    OPEN = "open"
    STIMULATION_PROBLEM = "stimulation_problem"
    NEUROMUSCULAR_BLOCKADE = "neuromuscular_blockade"
    SYSTEM_FAULT_LIKELY = "system_fault_likely"
    RECORDING_PROBLEM_LIKELY = "recording_problem_likely"
    TRUE_LOS = "true_los"
    NOT_TRUE_LOS = "not_true_los"  # surgeon's verdict only


CONCLUSION_MESSAGES: dict[Conclusion, str] = {
    Conclusion.OPEN: "Troubleshooting in progress.",
    Conclusion.STIMULATION_PROBLEM: (
        "Stimulation problem: current not delivered, a lead or a wet field. Fix it and stimulate again."
    ),
    Conclusion.NEUROMUSCULAR_BLOCKADE: (
        "Neuromuscular blockade: responses are depressed on both sides. Wait for train-of-four recovery."
    ),
    Conclusion.SYSTEM_FAULT_LIKELY: (
        "No response from the contralateral vagus either: system fault (recording chain) or blockade "
        "likely, not a nerve injury."
    ),
    Conclusion.RECORDING_PROBLEM_LIKELY: (
        "Recording problem likely: check tube depth and rotation, secretions, electrodes and cables."
    ),
    Conclusion.TRUE_LOS: ("True loss of signal: map the nerve from distal to proximal (type 1 / type 2). "
                          "Probe responses of this RLN are mapping now, not recovery: recovery is "
                          "judged on the vagus."),
    Conclusion.NOT_TRUE_LOS: "Not a true loss of signal (surgeon's verdict).",
}

STAGING_MESSAGE = (
    "Confirmed, unrecovered loss of signal on the first side of a bilateral operation: "
    "consider postponing the second side (INMSG 2018)."
)

STAGING_DECISIONS = ("postpone_second_side", "proceed_second_side")

# Steps entered by hand (laryngoscopy) vs steps with a measured response.
LARYNGOSCOPY = ("L1", "L2")
ALL_STEPS = ("L1", "V1", "S1", "R1", "R2", "S2", "V2", "L2", "R2P", "R2D")


class ProcedureError(ValueError):
    """An operator action that cannot be applied; the message says why."""


def _yes_no(answer: Any) -> str:
    if isinstance(answer, bool):
        return "yes" if answer else "no"
    if isinstance(answer, str) and answer.strip().lower() in ("yes", "no"):
        return answer.strip().lower()
    raise ProcedureError(f"troubleshooting answer {answer!r}: must be yes or no")


def _side(side: Side | str) -> Side:
    try:
        return Side(side)
    except ValueError:
        raise ProcedureError(f"side {side!r}: must be L or R") from None


def _finite(x: float | None) -> float | None:
    return x if x is None or math.isfinite(x) else None


def _measurement_value(m: Measurement, response: bool, how: str) -> dict[str, Any]:
    s = m.stimulus
    return {
        "site": s.site.value,
        "source": s.source.value,
        "response": bool(response),
        "amplitude_uV": _finite(m.amplitude_uV),
        "latency_ms": _finite(m.latency_ms) if response else None,
        "onset_latency_ms": _finite(m.onset_latency_ms) if response else None,
        "set_mA": s.set_mA,
        "delivered_mA": _finite(s.delivered_mA),
        "pw_us": s.pw_us,
        "t_s": s.t_s,
        "stimulus_index": s.index,
        "how": how,
    }


def _better(new: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    if new["response"] != old["response"]:
        return bool(new["response"])
    return (new["amplitude_uV"] or 0.0) > (old["amplitude_uV"] or 0.0)


class Procedure:
    """The INMSG procedure of one case. See the module docstring for the semantics."""

    def __init__(self) -> None:
        self._d: dict[str, Any] = {
            "format": FORMAT,
            "plan": None,  # {"sides": ["L", "R"], "t_s": ...}
            "steps": {"L": {}, "R": {}},  # side -> step -> value
            "laryngoscopy": {"L": {}, "R": {}},  # side -> "L1"/"L2" -> finding
            "troubleshooting": [],  # records, oldest first
            "mapping": {"L": [], "R": []},
            "staging": [],  # recommendation history
        }

    # -- serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._d))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Procedure":
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise ProcedureError(f"procedure state: format {found!r} is not {FORMAT!r}")
        p = cls()
        for key in p._d:
            if key not in data:
                raise ProcedureError(f"procedure state: missing {key!r}")
        p._d = copy.deepcopy(dict(data))
        return p

    # -- plan -------------------------------------------------------------------------
    def set_plan(self, sides: Iterable[Side | str], t_s: float) -> None:
        """Planned sides in operating order: ``[L]``, ``[R]``, ``[L, R]`` or ``[R, L]``."""
        order = [_side(s).value for s in sides]
        if not order or len(order) > 2 or len(set(order)) != len(order):
            raise ProcedureError(f"planned sides {order}: give one side, or both sides in operating order")
        self._d["plan"] = {"sides": order, "t_s": t_s}
        self._update_staging(t_s, "plan changed")

    @property
    def planned_sides(self) -> list[Side]:
        plan = self._d["plan"]
        return [Side(s) for s in plan["sides"]] if plan else []

    @property
    def plan_kind(self) -> str | None:
        sides = self.planned_sides
        if not sides:
            return None
        if len(sides) == 2:
            return "bilateral"
        return "left" if sides[0] is Side.L else "right"

    # -- steps ------------------------------------------------------------------------
    def offer_tagged(self, m: Measurement, response: bool) -> bool:
        """A valid measurement tagged with a step; returns True when it became the value."""
        step = m.stimulus.step
        if step is None:
            return False
        side = m.stimulus.side.value
        new = _measurement_value(m, response, "tagged")
        old = self._d["steps"][side].get(step.value)
        if old is None:
            new["count"] = 1
            self._d["steps"][side][step.value] = new
            return True
        count = int(old.get("count", 0)) + 1
        if old["how"] == "operator" or not _better(new, old):
            old["count"] = count
            return False
        new["count"] = count
        self._d["steps"][side][step.value] = new
        return True

    def capture_step(self, step: Step | str, m: Measurement, response: bool, t_s: float) -> dict[str, Any]:
        """The operator tags this measurement as ``step`` of its side."""
        try:
            step = Step(step)
        except ValueError:
            raise ProcedureError(f"step {step!r}: must be one of {', '.join(s.value for s in Step)}") from None
        side = m.stimulus.side.value
        old = self._d["steps"][side].get(step.value)
        value = _measurement_value(m, response, "operator")
        value["count"] = int(old.get("count", 0)) if old else 0
        value["captured_t_s"] = t_s
        self._d["steps"][side][step.value] = value
        return copy.deepcopy(value)

    def clear_step(self, side: Side | str, step: Step | str) -> None:
        self._d["steps"][_side(side).value].pop(Step(step).value, None)

    def step(self, side: Side | str, step: Step | str) -> dict[str, Any] | None:
        value = self._d["steps"][_side(side).value].get(Step(step).value)
        return copy.deepcopy(value) if value else None

    def set_laryngoscopy(self, phase: str, side: Side | str, finding: Finding | str, t_s: float,
                         note: str = "") -> None:
        if phase not in LARYNGOSCOPY:
            raise ProcedureError(f"laryngoscopy {phase!r}: must be L1 or L2")
        try:
            finding = Finding(finding)
        except ValueError:
            allowed = ", ".join(f.value for f in Finding)
            raise ProcedureError(f"laryngoscopy finding {finding!r}: must be one of {allowed}") from None
        self._d["laryngoscopy"][_side(side).value][phase] = {
            "finding": finding.value, "note": str(note), "t_s": t_s,
        }

    def laryngoscopy(self, phase: str, side: Side | str) -> dict[str, Any] | None:
        value = self._d["laryngoscopy"][_side(side).value].get(phase)
        return copy.deepcopy(value) if value else None

    def r2_reduction(self, side: Side | str, settings: Mapping[str, Any]) -> dict[str, Any] | None:
        """(R2D - R2P) / R2D in % with the advice from ``rules.r2_reduction_*_pct``."""
        steps = self._d["steps"][_side(side).value]
        p, d = steps.get("R2P"), steps.get("R2D")
        if not p or not d or not d.get("amplitude_uV") or d["amplitude_uV"] <= 0:
            return None
        r2p = float(p["amplitude_uV"] or 0.0) if p["response"] else 0.0
        r2d = float(d["amplitude_uV"])
        pct = (r2d - r2p) / r2d * 100.0
        map_pct = float(settings["rules.r2_reduction_map_pct"])
        palsy_pct = float(settings["rules.r2_reduction_palsy_pct"])
        if pct > palsy_pct:
            advice, message = "palsy_likely", (
                f"R2p is {pct:.0f} % below R2d (> {palsy_pct:g} %): palsy likely; map the nerve."
            )
        elif pct > map_pct:
            advice, message = "map", f"R2p is {pct:.0f} % below R2d (> {map_pct:g} %): map the nerve."
        else:
            advice, message = None, f"R2p is {pct:.0f} % below R2d."
        return {"r2p_uV": r2p, "r2d_uV": r2d, "reduction_pct": round(pct, 1), "advice": advice,
                "message": message}

    # -- troubleshooting --------------------------------------------------------------
    def _open_record(self, side: str) -> dict[str, Any] | None:
        for rec in reversed(self._d["troubleshooting"]):
            if rec["side"] == side and rec["recovered_t_s"] is None:
                return rec
        return None

    def _latest_record(self, side: str) -> dict[str, Any] | None:
        for rec in reversed(self._d["troubleshooting"]):
            if rec["side"] == side:
                return rec
        return None

    def on_loss(self, side: Side | str, site: Site | str, t_s: float, stimulus_index: int | None,
                current_measured: bool = False) -> dict[str, Any]:
        """The rule engine raised a loss of signal; opens or joins the side's record."""
        side = _side(side).value
        site = Site(site).value
        rec = self._open_record(side)
        if rec is None:
            rec = {
                "id": len(self._d["troubleshooting"]) + 1,
                "side": side,
                "t_s": t_s,
                "stimulus_index": stimulus_index,
                "sites": {},
                "answers": {},
                "verdict": None,
                "recovered_t_s": None,
            }
            self._d["troubleshooting"].append(rec)
        rec["sites"][site] = {"t_s": t_s, "stimulus_index": stimulus_index, "recovered_t_s": None}
        if current_measured and Check.CURRENT_DELIVERED.value not in rec["answers"]:
            rec["answers"][Check.CURRENT_DELIVERED.value] = {
                "answer": "yes", "by": "monitor", "t_s": t_s,
                "note": "delivered current measured within tolerance on the stimuli that lost the signal",
            }
        self._update_staging(t_s, "")
        return copy.deepcopy(rec)

    def on_recovery(self, side: Side | str, site: Site | str, t_s: float) -> None:
        """The rule engine saw the signal recover at ``site``; the record closes when no
        site of the side is still lost."""
        side = _side(side).value
        rec = self._open_record(side)
        if rec is None:
            return
        entry = rec["sites"].get(Site(site).value)
        if entry is not None and entry["recovered_t_s"] is None:
            entry["recovered_t_s"] = t_s
        if all(e["recovered_t_s"] is not None for e in rec["sites"].values()):
            rec["recovered_t_s"] = t_s
        self._update_staging(t_s, "recovered")

    def mapping_active(self, side: Side | str) -> bool:
        """True while ``side`` has a confirmed (true LOS), unrecovered loss of signal.

        Probe stimuli of that side's RLN are then mapping (distal to proximal), not
        monitoring: a response distal to a segmental injury says nothing about the nerve
        as a whole, so the rule engine neither recovers nor loses the site on them.
        """
        rec = self._open_record(_side(side).value)
        return rec is not None and self._conclude(rec)[0] is Conclusion.TRUE_LOS

    def note_contralateral_vagus(self, side: Side | str, t_s: float, amplitude_uV: float | None) -> bool:
        """A vagal response on the other side while ``side`` has an open record."""
        rec = self._open_record(_side(side).value)
        if rec is None or Check.CONTRALATERAL_VAGUS.value in rec["answers"]:
            return False
        note = "response measured" + (f" ({amplitude_uV:.0f} uV)" if amplitude_uV is not None else "")
        rec["answers"][Check.CONTRALATERAL_VAGUS.value] = {"answer": "yes", "by": "monitor", "t_s": t_s,
                                                           "note": note}
        self._update_staging(t_s, "")
        return True

    def answer(self, side: Side | str, check: Check | str, answer: Any, t_s: float, note: str = "",
               by: str = "operator") -> dict[str, Any]:
        """Record an answer of the open (else the latest) record of ``side``."""
        side = _side(side).value
        try:
            check = Check(check)
        except ValueError:
            allowed = ", ".join(c.value for c in Check)
            raise ProcedureError(f"troubleshooting check {check!r}: must be one of {allowed}") from None
        rec = self._open_record(side) or self._latest_record(side)
        if rec is None:
            raise ProcedureError(f"no loss of signal on side {side} to troubleshoot")
        rec["answers"][check.value] = {"answer": _yes_no(answer), "by": by, "t_s": t_s, "note": str(note)}
        self._update_staging(t_s, "verdict changed")
        return self.troubleshooting(side) or {}

    def set_verdict(self, side: Side | str, verdict: Conclusion | str, reason: str, t_s: float) -> None:
        """The surgeon's own verdict on the side's loss: ``true_los`` or ``not_true_los``."""
        side = _side(side).value
        verdict = Conclusion(verdict)
        if verdict not in (Conclusion.TRUE_LOS, Conclusion.NOT_TRUE_LOS):
            raise ProcedureError(f"verdict {verdict.value!r}: must be true_los or not_true_los")
        if not str(reason).strip():
            raise ProcedureError("verdict: a reason is required")
        rec = self._open_record(side) or self._latest_record(side)
        if rec is None:
            raise ProcedureError(f"no loss of signal on side {side} to judge")
        rec["verdict"] = {"verdict": verdict.value, "reason": str(reason), "t_s": t_s}
        self._update_staging(t_s, "verdict changed")

    def _nonrecurrent_suspected(self, rec: Mapping[str, Any]) -> bool:
        if rec["side"] != "R":
            return False
        ans = rec["answers"].get(Check.NONRECURRENT.value)
        if ans is not None:
            return ans["answer"] == "yes"
        v1r, v1l = self._d["steps"]["R"].get("V1"), self._d["steps"]["L"].get("V1")
        return bool(v1r and not v1r["response"] and v1l and v1l["response"])

    def _conclude(self, rec: Mapping[str, Any]) -> tuple[Conclusion, Check | None, str]:
        a = {k: v["answer"] for k, v in rec["answers"].items()}
        if rec["verdict"] is not None:
            return Conclusion(rec["verdict"]["verdict"]), None, "surgeon"
        if any(a.get(c.value) == "no" for c in (Check.CURRENT_DELIVERED, Check.LEADS_OK, Check.FIELD_DRY)):
            return Conclusion.STIMULATION_PROBLEM, None, "checks"
        if a.get(Check.NMB_OK.value) == "no":
            return Conclusion.NEUROMUSCULAR_BLOCKADE, None, "checks"
        if a.get(Check.CONTRALATERAL_VAGUS.value) == "no":
            return Conclusion.SYSTEM_FAULT_LIKELY, None, "checks"
        if a.get(Check.LARYNGEAL_TWITCH.value) == "yes":
            return Conclusion.RECORDING_PROBLEM_LIKELY, None, "checks"
        if a.get(Check.TUBE_POSITION_OK.value) == "no" or a.get(Check.SECRETIONS_OK.value) == "no":
            return Conclusion.RECORDING_PROBLEM_LIKELY, None, "checks"
        if (
            a.get(Check.CURRENT_DELIVERED.value) == "yes"
            and a.get(Check.LARYNGEAL_TWITCH.value) == "no"
            and a.get(Check.CONTRALATERAL_VAGUS.value) == "yes"
        ):
            return Conclusion.TRUE_LOS, None, "checks"
        for c in CHECK_ORDER:
            if c is Check.NONRECURRENT and rec["side"] != "R":
                continue
            if c.value not in a:
                return Conclusion.OPEN, c, "checks"
        return Conclusion.OPEN, None, "checks"

    def troubleshooting(self, side: Side | str) -> dict[str, Any] | None:
        """The side's open (else latest) record with its conclusion and next check."""
        rec = self._open_record(_side(side).value) or self._latest_record(_side(side).value)
        if rec is None:
            return None
        return self._describe(rec)

    def _describe(self, rec: Mapping[str, Any]) -> dict[str, Any]:
        conclusion, nxt, by = self._conclude(rec)
        out = copy.deepcopy(dict(rec))
        message = CONCLUSION_MESSAGES[conclusion]
        if conclusion is Conclusion.OPEN and nxt is not None:
            message = f"{message} Next: {CHECK_QUESTIONS[nxt]}"
        out.update({
            "open": rec["recovered_t_s"] is None,
            "conclusion": conclusion.value,
            "concluded_by": by,
            "confirmed": conclusion is Conclusion.TRUE_LOS,
            "next_check": nxt.value if nxt else None,
            "next_question": CHECK_QUESTIONS[nxt] if nxt else None,
            "message": message,
            "nonrecurrent_suspected": self._nonrecurrent_suspected(rec),
        })
        return out

    def records(self) -> list[dict[str, Any]]:
        return [self._describe(r) for r in self._d["troubleshooting"]]

    # -- mapping ----------------------------------------------------------------------
    def add_mapping_point(self, side: Side | str, position_mm: float, response: bool, t_s: float,
                          amplitude_uV: float | None = None, label: str = "") -> None:
        try:
            position = float(position_mm)
        except (TypeError, ValueError):
            raise ProcedureError(f"mapping position {position_mm!r}: must be a number of mm") from None
        if not position >= 0 or position == float("inf"):
            raise ProcedureError(f"mapping position {position_mm!r}: must be >= 0 mm from the laryngeal entry")
        self._d["mapping"][_side(side).value].append({
            "position_mm": position, "response": bool(response), "t_s": t_s,
            "amplitude_uV": amplitude_uV, "label": str(label),
        })

    def clear_mapping(self, side: Side | str) -> None:
        self._d["mapping"][_side(side).value] = []

    def mapping(self, side: Side | str) -> dict[str, Any]:
        """Type 1 (segmental) / type 2 (global) from the side's mapping points."""
        side = _side(side).value
        points = sorted(self._d["mapping"][side], key=lambda p: p["position_mm"])
        out: dict[str, Any] = {"side": side, "points": copy.deepcopy(points), "type": None,
                               "classification": "not_mapped", "lesion_between_mm": None,
                               "message": "Not mapped."}
        if not points:
            return out
        responding = [p["position_mm"] for p in points if p["response"]]
        if responding:
            silent_proximal = [p["position_mm"] for p in points
                               if not p["response"] and p["position_mm"] > min(responding)]
            if silent_proximal:
                first_silent = min(silent_proximal)
                last_ok = max(x for x in responding if x < first_silent)
                out["lesion_between_mm"] = [last_ok, first_silent]
                where = f"between {last_ok:g} and {first_silent:g} mm"
            else:
                where = f"proximal to {max(responding):g} mm (every mapped point responds)"
            out.update(type=1, classification="type_1",
                       message=f"Type 1 (segmental) injury: distal stimulation responds; lesion {where}.")
            return out
        rec = self._latest_record(side)
        contra = rec["answers"].get(Check.CONTRALATERAL_VAGUS.value, {}).get("answer") if rec else None
        if contra == "yes":
            out.update(type=2, classification="type_2",
                       message="Type 2 (global) injury: no response anywhere on this side; contralateral vagus responds.")
        elif contra == "no":
            out.update(classification="system_fault_suspected",
                       message="No response anywhere, contralateral vagus silent too: suspect a system fault.")
        else:
            out.update(classification="undetermined",
                       message="No response anywhere on this side: stimulate the contralateral vagus to tell type 2 from a system fault.")
        return out

    # -- staging ----------------------------------------------------------------------
    def _staging_basis(self) -> dict[str, Any] | None:
        sides = self.planned_sides
        if len(sides) != 2:
            return None
        first = sides[0].value
        rec = self._open_record(first)
        if rec is None:
            return None
        conclusion, _, _ = self._conclude(rec)
        if conclusion is not Conclusion.TRUE_LOS:
            return None
        return rec

    def _update_staging(self, t_s: float, reason: str) -> None:
        basis = self._staging_basis()
        active = self._active_staging()
        if active is not None and (basis is None or basis["id"] != active["record_id"]):
            active["basis_ended_t_s"] = t_s
            rec = next((r for r in self._d["troubleshooting"] if r["id"] == active["record_id"]), None)
            if rec is not None and rec["recovered_t_s"] is not None:
                active["basis_end_reason"] = "recovered"
            else:
                active["basis_end_reason"] = reason or "basis changed"
            active = None
        if basis is not None and active is None:
            self._d["staging"].append({
                "id": len(self._d["staging"]) + 1,
                "record_id": basis["id"],
                "side": basis["side"],
                "second_side": self.planned_sides[1].value,
                "since_t_s": t_s,
                "message": STAGING_MESSAGE,
                "basis_ended_t_s": None,
                "basis_end_reason": None,
                "decision": None,
            })

    def _active_staging(self) -> dict[str, Any] | None:
        for entry in reversed(self._d["staging"]):
            if entry["basis_ended_t_s"] is None:
                return entry
        return None

    def staging_recommendation(self) -> dict[str, Any] | None:
        """The active recommendation (None when its basis does not hold)."""
        active = self._active_staging()
        return copy.deepcopy(active) if active else None

    def staging_history(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self._d["staging"])

    def decide_staging(self, decision: str, reason: str, t_s: float) -> dict[str, Any]:
        """The surgeon's decision on the latest recommendation, with its reason."""
        if decision not in STAGING_DECISIONS:
            raise ProcedureError(f"staging decision {decision!r}: must be one of {', '.join(STAGING_DECISIONS)}")
        if not str(reason).strip():
            raise ProcedureError("staging decision: a reason is required")
        if not self._d["staging"]:
            raise ProcedureError("staging decision: there is no staging recommendation")
        entry = self._d["staging"][-1]
        entry["decision"] = {"decision": decision, "reason": str(reason), "t_s": t_s}
        return copy.deepcopy(entry)

    # -- summary ----------------------------------------------------------------------
    def summary(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Per side: steps, laryngoscopy, V2/V1 ratio, R2 reduction, mapping, troubleshooting."""
        sides: dict[str, Any] = {}
        for side in ("L", "R"):
            steps = copy.deepcopy(self._d["steps"][side])
            v1, v2 = steps.get("V1"), steps.get("V2")
            ratio = None
            if v1 and v2 and v1["response"] and v1["amplitude_uV"]:
                ratio = round((v2["amplitude_uV"] or 0.0) / v1["amplitude_uV"] * 100.0 if v2["response"] else 0.0, 1)
            sides[side] = {
                "steps": steps,
                "laryngoscopy": copy.deepcopy(self._d["laryngoscopy"][side]),
                "v2_of_v1_pct": ratio,
                "r2_reduction": self.r2_reduction(side, settings),
                "mapping": self.mapping(side),
                "troubleshooting": [self._describe(r) for r in self._d["troubleshooting"] if r["side"] == side],
            }
        return {
            "plan": copy.deepcopy(self._d["plan"]),
            "plan_kind": self.plan_kind,
            "sides": sides,
            "staging": self.staging_history(),
            "staging_active": self.staging_recommendation(),
        }
