"""The procedure model's operator inputs, value by value: mapping points entered by hand
or from the measured stimulus, troubleshooting answers and verdicts (also on a record
that has recovered), steps captured by the operator, the plan, laryngoscopy and the
staging decision, and the words of their refusals."""

from __future__ import annotations

import pytest
from rules_factory import Stream

from app.model import Side, Site, Source, Step
from app.rules.procedure import Check, Procedure, ProcedureError

PROBE_RLN = dict(site=Site.RLN, source=Source.PROBE)


def lost(side: str = "L", recovered: bool = False) -> Procedure:
    p = Procedure()
    p.on_loss(side, "RLN", 100.0, 3)
    if recovered:
        p.on_recovery(side, "RLN", 150.0)
    return p


# -- mapping points --------------------------------------------------------------------------

def test_a_point_entered_by_hand_keeps_the_values_given():
    p = lost()
    out = p.add_mapping_point("L", 20.0, True, 210.0, amplitude_uV=812.0, latency_ms=4.25, set_mA=1.0,
                              delivered_mA=0.98)
    assert out["points"] == [{
        "position_mm": 20.0, "response": True, "t_s": 210.0, "label": "", "amplitude_uV": 812.0,
        "latency_ms": 4.25, "set_mA": 1.0, "delivered_mA": 0.98, "stimulus_index": None, "measured": False,
        "measured_response": None, "note": ""}]
    out = p.add_mapping_point("L", 25.0, False, 215.0, label="above the ligament")
    assert out["points"][1]["label"] == "above the ligament" and out["points"][1]["note"] == ""


def test_a_point_takes_the_measured_stimulus_and_notes_a_stated_verdict_that_disagrees():
    p, s = lost(), Stream()
    m = s.resp(650.0, 3.9, set_mA=2.0, delivered=1.95, **PROBE_RLN)
    p.note_rln_stimulus(m, True)
    out = p.add_mapping_point("L", 10.0, False, 200.0)
    assert out["points"] == [{
        "position_mm": 10.0, "response": False, "t_s": 200.0, "label": "", "amplitude_uV": 650.0,
        "latency_ms": 3.9, "set_mA": 2.0, "delivered_mA": 1.95, "stimulus_index": m.stimulus.index,
        "measured": True, "measured_response": True,
        "note": "entered as no response; the monitor measured response, 650 µV, 3.90 ms at 2.0 mA, 1.95 mA delivered",
        "stimulus_t_s": m.stimulus.t_s}]
    miss = s.miss(set_mA=1.0, delivered=1.0, **PROBE_RLN)
    p.note_rln_stimulus(miss, False)
    out = p.add_mapping_point("L", 30.0, True, 230.0)
    assert out["points"][-1]["note"] == "entered as a response; the monitor measured no response, 30 µV at 1.0 mA, " \
                                        "1.00 mA delivered"
    assert out["points"][-1]["stimulus_t_s"] == miss.stimulus.t_s


def test_a_point_without_a_verdict_or_a_measurement_is_refused():
    p = lost()
    with pytest.raises(ProcedureError) as err:
        p.add_mapping_point("L", 5.5, None, 200.0)
    assert str(err.value) == ("mapping point at 5.5 mm: no RLN stimulus measured since the loss; "
                              "say whether the nerve responded")


# -- troubleshooting answers and verdicts ----------------------------------------------------

def test_an_answer_is_recorded_with_who_when_and_the_note():
    p = lost()
    out = p.answer("L", "leads_ok", True, 220.0)
    assert out["answers"] == {"leads_ok": {"answer": "yes", "by": "operator", "t_s": 220.0, "note": ""}}
    assert out["conclusion"] == "open" and out["next_check"] == "current_delivered"
    out = p.answer("L", Check.FIELD_DRY, False, 230.0, note="blood in the field", by="nurse")
    assert out["answers"]["field_dry"] == {"answer": "no", "by": "nurse", "t_s": 230.0, "note": "blood in the field"}
    assert out["conclusion"] == "stimulation_problem"


def test_answers_and_the_verdict_go_to_the_latest_record_once_it_recovered():
    p = lost(recovered=True)
    out = p.answer("L", "leads_ok", "yes", 300.0)
    assert out["open"] is False and out["answers"]["leads_ok"]["answer"] == "yes"
    p.set_verdict("L", "not_true_los", "tube moved", 310.0)
    assert p.troubleshooting("L")["verdict"] == {"verdict": "not_true_los", "reason": "tube moved", "t_s": 310.0}


def test_the_surgeons_verdict_is_recorded_with_its_reason():
    p = lost()
    p.set_verdict("L", "true_los", "no twitch on palpation", 250.0)
    rec = p.troubleshooting("L")
    assert rec["verdict"] == {"verdict": "true_los", "reason": "no twitch on palpation", "t_s": 250.0}
    assert rec["conclusion"] == "true_los" and rec["concluded_by"] == "surgeon"


@pytest.mark.parametrize("call, message", [
    (lambda p: p.answer("L", "ask_the_nurse", True, 1.0),
     "troubleshooting check 'ask_the_nurse': must be one of " + ", ".join(c.value for c in Check)),
    (lambda p: p.answer("R", "leads_ok", True, 1.0), "no loss of signal on side R to troubleshoot"),
    (lambda p: p.set_verdict("R", "true_los", "seen", 1.0), "no loss of signal on side R to judge"),
    (lambda p: p.set_verdict("L", "true_los", "  ", 1.0), "verdict: a reason is required"),
    (lambda p: p.capture_step("V9", Stream().resp(), True, 1.0),
     "step 'V9': must be one of " + ", ".join(s.value for s in Step)),
    (lambda p: p.decide_staging("wait", "x", 1.0),
     "staging decision 'wait': must be one of postpone_second_side, proceed_second_side"),
    (lambda p: p.decide_staging("proceed_second_side", "", 1.0), "staging decision: a reason is required"),
    (lambda p: p.decide_staging("proceed_second_side", "nerve fine", 1.0),
     "staging decision: there is no staging recommendation"),
])
def test_refusals_say_what_is_wrong(call, message):
    with pytest.raises(ProcedureError) as err:
        call(lost())
    assert str(err.value) == message


# -- staging ---------------------------------------------------------------------------------

def _true_los_first_side() -> Procedure:
    p = Procedure()
    p.set_plan(["L", "R"], 5.0)
    p.on_loss("L", "RLN", 100.0, 3)
    p.answer("L", "current_delivered", True, 110.0)
    p.answer("L", "laryngeal_twitch", False, 111.0)
    p.answer("L", "contralateral_vagus", True, 112.0)
    assert p.staging_recommendation() is not None
    return p


def test_an_answer_that_undoes_the_true_loss_ends_the_staging_basis_as_a_changed_verdict():
    p = _true_los_first_side()
    p.answer("L", "leads_ok", False, 120.0)
    assert p.staging_recommendation() is None
    h = p.staging_history()[0]
    assert (h["basis_ended_t_s"], h["basis_end_reason"]) == (120.0, "verdict changed")


def test_the_staging_decision_is_recorded_and_handed_out_as_a_copy():
    p = _true_los_first_side()
    out = p.decide_staging("postpone_second_side", "bilateral palsy risk", 130.0)
    assert out["decision"] == {"decision": "postpone_second_side", "reason": "bilateral palsy risk", "t_s": 130.0}
    out["decision"]["reason"] = "spoilt"
    assert p.staging_history()[0]["decision"]["reason"] == "bilateral palsy risk"


def test_the_plan_is_kept_with_its_time():
    p = Procedure()
    p.set_plan([Side.R, Side.L], 5.0)
    assert p.to_dict()["plan"] == {"sides": ["R", "L"], "t_s": 5.0}
    assert p.plan_kind == "bilateral"


# -- steps -----------------------------------------------------------------------------------

def test_a_captured_step_keeps_the_count_of_the_stimuli_tagged_before():
    p, s = Procedure(), Stream()
    v = p.capture_step(Step.V1, s.resp(700.0, 6.0), True, 30.0)
    assert (v["count"], v["how"], v["captured_t_s"]) == (0, "operator", 30.0)
    p2 = Procedure()
    for _ in range(2):
        p2.offer_tagged(s.resp(700.0, 6.0, step=Step.V1), True)
    assert p2.step("L", "V1")["count"] == 2
    v = p2.capture_step("V1", s.resp(650.0, 6.1), True, 40.0)
    assert (v["count"], v["amplitude_uV"], v["how"]) == (2, 650.0, "operator")
    assert p2.step("L", "V1")["count"] == 2


def test_clearing_a_step_never_recorded_is_harmless():
    p = Procedure()
    p.clear_step("L", "V2")
    assert p.step("L", "V2") is None


def test_laryngoscopy_without_a_note_has_an_empty_one():
    p = Procedure()
    p.set_laryngoscopy("L1", "R", "normal", 2.0)
    assert p.laryngoscopy("L1", "R") == {"finding": "normal", "note": "", "t_s": 2.0}


# -- the offer after a loss ------------------------------------------------------------------

def test_the_offer_of_a_recovered_record_is_still_given_and_as_a_copy():
    p, s = lost(), Stream()
    m = s.miss(**PROBE_RLN)
    p.document_after_loss("R2", m, False, {"amplitude_uV": 30.0})
    assert p.offer("L", "R2")["measurement"] == {"amplitude_uV": 30.0}
    got = p.offer("L", "R2")
    got["measurement"]["amplitude_uV"] = 1.0
    assert p.offer("L", "R2")["measurement"] == {"amplitude_uV": 30.0}
    p.on_recovery("L", "RLN", 150.0)
    offer = p.offer("L", "R2")
    assert offer is not None and offer["stimulus_index"] == m.stimulus.index


# -- the mapping's classification ------------------------------------------------------------

def test_a_side_not_mapped():
    assert Procedure().mapping("R") == {
        "side": "R", "site": "RLN", "points": [], "type": None, "classification": "not_mapped",
        "lesion_between_mm": None, "lesion_proximal_to_mm": None, "silent_distal_mm": [], "message": "Not mapped."}


def test_silent_everywhere_without_a_record_is_undetermined():
    p = Procedure()
    out = p.add_mapping_point("L", 10.0, False, 200.0)
    assert out["classification"] == "undetermined" and out["type"] is None
    assert out["message"] == ("No response at any mapped point of the left RLN: stimulate the contralateral vagus "
                              "to tell a type 2 (global) injury from a system fault.")


def test_silent_everywhere_with_the_contralateral_vagus_silent_too_is_a_system_fault():
    p = lost("R")
    p.answer("R", "contralateral_vagus", False, 150.0)
    out = p.add_mapping_point("R", 10.0, False, 200.0)
    assert out["classification"] == "system_fault_suspected"
    assert out["message"] == ("No response at any mapped point of the right RLN, and the contralateral vagus is "
                              "silent too: suspect a system fault.")


def test_a_point_silent_and_responding_at_the_same_place_is_not_a_lesion_there():
    p = lost()
    p.add_mapping_point("L", 10.0, False, 200.0)
    out = p.add_mapping_point("L", 10.0, True, 210.0)
    assert out["lesion_proximal_to_mm"] == 10.0 and out["lesion_between_mm"] is None
    assert out["silent_distal_mm"] == []


def test_a_silent_point_distal_to_a_response_is_named_a_contact_problem_after_the_lesion():
    p = lost()
    p.add_mapping_point("L", 5.0, False, 200.0)
    p.add_mapping_point("L", 10.0, True, 210.0)
    out = p.add_mapping_point("L", 20.0, False, 220.0)
    assert out["message"] == ("Type 1 (segmental) injury of the left RLN: the nerve responds up to 10 mm from the "
                              "laryngeal entry and is silent at 20 mm, so the lesion lies between 10 and 20 mm. "
                              "Silent at 5 mm, distal to a responding point: a contact problem; re-test.")
    out["points"][0]["response"] = "spoilt"
    assert p.mapping("L")["points"][0]["response"] is False


def test_after_the_recovery_a_point_does_not_take_a_stimulus_of_the_closed_record():
    p, s = lost(), Stream()
    p.note_rln_stimulus(s.resp(650.0, 3.9, **PROBE_RLN), True)
    p.on_recovery("L", "VAGUS", 140.0)  # a site that was not lost: the record stays open
    assert p.troubleshooting("L")["open"] is True
    p.on_recovery("L", "RLN", 150.0)
    assert p.troubleshooting("L")["open"] is False
    out = p.add_mapping_point("L", 10.0, True, 200.0)
    assert out["points"][0]["measured"] is False and out["points"][0]["amplitude_uV"] is None


# -- R2 reduction ----------------------------------------------------------------------------

def _r2(p_amp, p_resp, d_amp, d_resp=True):
    from app.model import Measurement, Stimulus

    pr = Procedure()
    for i, (step, amp, resp) in enumerate(((Step.R2P, p_amp, p_resp), (Step.R2D, d_amp, d_resp))):
        stim = Stimulus(index=i, t_s=float(i), site=Site.RLN, side=Side.L, source=Source.PROBE, set_mA=1.0,
                        delivered_mA=1.0)
        pr.capture_step(step, Measurement(stim, Side.L.channel, True, None, resp, amp, 4.0 if resp else None,
                                          3.5 if resp else None), resp, 10.0)
    from rules_factory import DEFAULTS

    return pr.r2_reduction("L", DEFAULTS)


def test_r2_reduction_values():
    r = _r2(300.0, True, 1000.0)
    assert {k: r[k] for k in ("r2p_uV", "r2d_uV", "reduction_pct")} == {"r2p_uV": 300.0, "r2d_uV": 1000.0,
                                                                         "reduction_pct": 70.0}
    # a proximal R2 without a response counts as nothing, whatever noise it measured
    assert _r2(30.0, False, 1000.0)["r2p_uV"] == 0.0
    # no distal amplitude: no reduction; a small one still gives one
    assert _r2(300.0, True, None, False) is None
    assert _r2(0.2, False, 0.5, False)["reduction_pct"] == 100.0


# -- troubleshooting records -----------------------------------------------------------------

def test_the_latest_record_of_the_side_is_the_one_answered_after_recovery():
    p = Procedure()
    p.on_loss("L", "RLN", 100.0, 1)
    p.on_recovery("L", "RLN", 110.0)
    p.on_loss("L", "RLN", 200.0, 2)
    p.on_recovery("L", "RLN", 210.0)
    p.on_loss("R", "RLN", 300.0, 3)
    p.on_recovery("R", "RLN", 310.0)
    assert p.answer("L", "leads_ok", True, 400.0)["id"] == 2
    assert p.troubleshooting("L")["id"] == 2


def test_a_nonrecurrent_nerve_is_suspected_on_the_right_only():
    from app.model import Measurement, Stimulus

    def v1(p, side, resp):
        stim = Stimulus(index=0, t_s=1.0, site=Site.VAGUS, side=side, source=Source.PROBE, set_mA=1.0,
                        delivered_mA=1.0, step=Step.V1)
        p.offer_tagged(Measurement(stim, side.channel, True, None, resp, 700.0 if resp else 20.0,
                                   6.0 if resp else None, 5.0 if resp else None), resp)

    p = lost("L")
    assert p.troubleshooting("L")["nonrecurrent_suspected"] is False
    p = lost("R")
    v1(p, Side.R, True)
    v1(p, Side.L, True)
    assert p.troubleshooting("R")["nonrecurrent_suspected"] is False  # both V1 responded
    p.answer("R", "nonrecurrent", "yes", 120.0)
    assert p.troubleshooting("R")["nonrecurrent_suspected"] is True


def test_troubleshooting_lists_the_v2_offer_when_there_is_no_r2_one():
    p, s = lost(), Stream()
    m = s.miss()
    p.document_after_loss("V2", m, False, {"amplitude_uV": 30.0})
    offers = p.troubleshooting("L")["offers"]
    assert [o["step"] for o in offers] == ["V2"]


def test_the_troubleshooting_record_is_a_copy():
    p = lost()
    p.answer("L", "leads_ok", True, 220.0)
    rec = p.troubleshooting("L")
    rec["answers"]["leads_ok"]["answer"] = "no"
    rec["sites"]["RLN"]["t_s"] = -1.0
    rec = p.troubleshooting("L")
    assert rec["answers"]["leads_ok"]["answer"] == "yes" and rec["sites"]["RLN"]["t_s"] == 100.0


# -- saved state and summary -----------------------------------------------------------------

@pytest.mark.parametrize("data, message", [
    ({"format": "lnm-procedure/0"}, "procedure state: format 'lnm-procedure/0' is not 'lnm-procedure/1'"),
    ({}, "procedure state: format None is not 'lnm-procedure/1'"),
    ("text", "procedure state: format 'str' is not 'lnm-procedure/1'"),
])
def test_a_saved_state_of_another_format_is_refused(data, message):
    with pytest.raises(ProcedureError) as err:
        Procedure.from_dict(data)
    assert str(err.value) == message


def test_a_procedure_read_back_is_independent_of_the_data_it_came_from():
    p = _true_los_first_side()
    data = p.to_dict()
    q = Procedure.from_dict(data)
    for v in data.values():
        if isinstance(v, dict):
            v.clear()
        elif isinstance(v, list):
            v.clear()
    assert q.to_dict() == p.to_dict()


def test_summary_per_side_and_as_a_copy():
    from rules_factory import DEFAULTS

    p, s = _true_los_first_side(), Stream()
    p.set_laryngoscopy("L1", "L", "normal", 2.0)
    p.capture_step(Step.V1, s.resp(700.0, 6.0), True, 30.0)
    p.capture_step(Step.V2, s.resp(650.0, 6.0), True, 31.0)
    p.decide_staging("postpone_second_side", "risk", 130.0)
    out = p.summary(DEFAULTS)
    assert out["plan"] == {"sides": ["L", "R"], "t_s": 5.0}
    assert out["sides"]["L"]["laryngoscopy"] == {"L1": {"finding": "normal", "note": "", "t_s": 2.0}}
    assert out["sides"]["L"]["v2_of_v1_pct"] == 92.9
    assert [r["id"] for r in out["sides"]["L"]["troubleshooting"]] == [1]
    assert out["sides"]["R"]["troubleshooting"] == []
    assert [h["id"] for h in out["staging"]] == [1] and out["staging_active"]["id"] == 1
    out["plan"]["sides"].append("X")
    out["sides"]["L"]["laryngoscopy"]["L1"]["note"] = "spoilt"
    out["sides"]["L"]["steps"]["V1"]["amplitude_uV"] = 1.0
    out["staging"][0]["decision"]["reason"] = "spoilt"
    out["staging_active"]["decision"]["reason"] = "spoilt"
    again = p.summary(DEFAULTS)
    assert again["plan"]["sides"] == ["L", "R"]
    assert again["sides"]["L"]["laryngoscopy"]["L1"]["note"] == ""
    assert again["sides"]["L"]["steps"]["V1"]["amplitude_uV"] == 700.0
    assert again["staging"][0]["decision"]["reason"] == "risk"
    assert p.staging_recommendation()["decision"]["reason"] == "risk"


def test_a_tagged_step_is_replaced_only_by_a_larger_response():
    p, s = Procedure(), Stream()
    first = s.resp(700.0, 6.0, step=Step.V1)
    p.offer_tagged(first, True)
    assert p.offer_tagged(s.resp(700.0, 6.1, step=Step.V1), True) is False  # as large: the first stays
    assert p.step("L", "V1")["stimulus_index"] == first.stimulus.index
    bigger = s.resp(750.0, 6.1, step=Step.V1)
    assert p.offer_tagged(bigger, True) is True
    assert p.step("L", "V1")["stimulus_index"] == bigger.stimulus.index


@pytest.mark.parametrize("answers, conclusion, next_check", [
    ({}, "open", "current_delivered"),
    ({"current_delivered": True}, "open", "leads_ok"),
    ({"leads_ok": False}, "stimulation_problem", None),
    ({"nmb_ok": False}, "neuromuscular_blockade", None),
    ({"contralateral_vagus": False}, "system_fault_likely", None),
    ({"laryngeal_twitch": True}, "recording_problem_likely", None),
    ({"secretions_ok": False}, "recording_problem_likely", None),
    ({"current_delivered": True, "laryngeal_twitch": False, "contralateral_vagus": True}, "true_los", None),
])
def test_the_checks_conclude(answers, conclusion, next_check):
    p = lost()
    for i, (check, answer) in enumerate(answers.items()):
        p.answer("L", check, answer, 110.0 + i)
    rec = p.troubleshooting("L")
    assert (rec["conclusion"], rec["concluded_by"], rec["next_check"]) == (conclusion, "checks", next_check)


def test_offer_tagged_says_whether_the_measurement_became_the_steps_value():
    p, s = Procedure(), Stream()
    assert p.offer_tagged(s.resp(700.0, 6.0), True) is False  # untagged: no step
    assert p.offer_tagged(s.resp(700.0, 6.0, step=Step.V1), True) is True  # the first V1


# -- the troubleshooting record of a loss ----------------------------------------------------

def test_a_loss_opens_a_record_and_a_second_site_joins_it():
    p = Procedure()
    rec = p.on_loss("L", "RLN", 100.0, 3, current_measured=True)
    assert rec == {"id": 1, "side": "L", "t_s": 100.0, "stimulus_index": 3,
                   "sites": {"RLN": {"t_s": 100.0, "stimulus_index": 3, "recovered_t_s": None}},
                   "answers": {"current_delivered": {
                       "answer": "yes", "by": "monitor", "t_s": 100.0,
                       "note": "delivered current measured within tolerance on the stimuli that lost the signal"}},
                   "verdict": None, "recovered_t_s": None}
    rec = p.on_loss(Side.L, Site.VAGUS, 105.0, 5)
    assert rec["id"] == 1 and rec["sites"]["VAGUS"] == {"t_s": 105.0, "stimulus_index": 5, "recovered_t_s": None}
    assert p.on_loss("R", "RLN", 106.0, 6)["id"] == 2
    rec["answers"].clear()
    assert p.troubleshooting("L")["answers"]["current_delivered"]["by"] == "monitor"


def test_a_loss_without_measured_current_leaves_the_check_to_the_operator():
    p = Procedure()
    assert p.on_loss("L", "RLN", 100.0, 3)["answers"] == {}
    p.answer("L", "current_delivered", False, 101.0)
    p.on_loss("L", "VAGUS", 102.0, 4, current_measured=True)  # the operator's answer is kept
    assert p.troubleshooting("L")["answers"]["current_delivered"]["answer"] == "no"


def test_a_loss_continued_after_recovery_reopens_the_same_record():
    p = Procedure()
    p.on_loss("L", "RLN", 100.0, 3)
    p.on_recovery("L", "RLN", 110.0)
    rec = p.on_loss("L", "RLN", 120.0, 9, continued=True)
    assert rec["id"] == 1 and rec["recovered_t_s"] is None and rec["reopened_t_s"] == [120.0]
    assert rec["sites"]["RLN"] == {"t_s": 100.0, "stimulus_index": 3, "recovered_t_s": None,
                                   "continued": [{"t_s": 120.0, "stimulus_index": 9}]}
    assert len(p.records()) == 1
    # a continued loss of another site, with no record open, starts a new record
    p.on_recovery("L", "RLN", 130.0)
    assert p.on_loss("L", "VAGUS", 131.0, 10, continued=True)["id"] == 2


def test_the_staging_recommendation_names_its_basis_and_the_second_side():
    from app.rules.procedure import STAGING_MESSAGE

    p = _true_los_first_side()
    assert p.staging_recommendation() == {
        "id": 1, "record_id": 1, "side": "L", "second_side": "R", "since_t_s": 112.0, "message": STAGING_MESSAGE,
        "basis_ended_t_s": None, "basis_end_reason": None, "decision": None}


@pytest.mark.parametrize("end, reason", [
    (lambda p: p.set_plan(["L"], 150.0), "plan changed"),
    (lambda p: p.on_recovery("L", "RLN", 150.0), "recovered"),
    (lambda p: p.set_verdict("L", "not_true_los", "tube moved", 150.0), "verdict changed"),
])
def test_the_staging_basis_ends_with_its_reason(end, reason):
    p = _true_los_first_side()
    end(p)
    assert p.staging_recommendation() is None
    h = p.staging_history()
    assert len(h) == 1 and (h[0]["basis_ended_t_s"], h[0]["basis_end_reason"]) == (150.0, reason)


def test_a_new_basis_after_the_end_is_a_new_recommendation():
    p = _true_los_first_side()
    p.set_verdict("L", "not_true_los", "tube moved", 150.0)
    p.set_verdict("L", "true_los", "no twitch after all", 160.0)
    h = p.staging_history()
    assert [(x["id"], x["since_t_s"], x["basis_ended_t_s"]) for x in h] == [(1, 112.0, 150.0), (2, 160.0, None)]
    assert p.staging_recommendation()["id"] == 2


def test_no_staging_without_a_bilateral_plan_or_on_the_second_side():
    p = Procedure()
    p.set_plan(["L"], 5.0)
    p.on_loss("L", "RLN", 100.0, 3)
    p.set_verdict("L", "true_los", "seen", 110.0)
    assert p.staging_recommendation() is None and p.staging_history() == []
    q = Procedure()
    q.set_plan(["L", "R"], 5.0)
    q.on_loss("R", "RLN", 100.0, 3)
    q.set_verdict("R", "true_los", "seen", 110.0)
    assert q.staging_recommendation() is None


# -- steps documented after a loss -----------------------------------------------------------

def test_the_stimulation_after_a_loss_is_offered_and_documented_until_a_better_one_or_a_tag():
    p, s = lost(), Stream()
    miss = s.miss(set_mA=1.0, delivered=1.0, **PROBE_RLN)
    v = p.document_after_loss("R2", miss, False, {"amplitude_uV": 30.0})
    assert v == {"site": "RLN", "source": "PROBE", "response": False, "amplitude_uV": 30.0, "latency_ms": None,
                 "onset_latency_ms": None, "set_mA": 1.0, "delivered_mA": 1.0, "pw_us": 100,
                 "t_s": miss.stimulus.t_s, "stimulus_index": miss.stimulus.index, "how": "after_loss", "count": 1,
                 "record_id": 1}
    offer = p.offer("L", "R2")
    assert offer["message"] == (f"R2 can be recorded from stimulus #{miss.stimulus.index} "
                                "(no response, 30 µV at 1.0 mA, 1.00 mA delivered).")
    assert (offer["step"], offer["how"], offer["measurement"]) == ("R2", "after_loss", {"amplitude_uV": 30.0})
    # another silent one changes nothing; a response replaces it
    assert p.document_after_loss("R2", s.miss(**PROBE_RLN), False) is None
    resp = s.resp(500.0, 3.9, **PROBE_RLN)
    assert p.document_after_loss("R2", resp, True)["stimulus_index"] == resp.stimulus.index
    assert p.offer("L", "R2")["measurement"] is None
    # a tagged value stays, the offer is still made
    p.capture_step("V2", s.resp(400.0, 6.0), True, 140.0)
    v2 = s.miss()
    assert p.document_after_loss("V2", v2, False) is None
    assert p.step("L", "V2")["how"] == "operator" and p.offer("L", "V2")["stimulus_index"] == v2.stimulus.index
    # the recovery withdraws the documented values, not the operator's
    p.on_recovery("L", "RLN", 150.0)
    assert p.step("L", "R2") is None and p.step("L", "V2")["how"] == "operator"


def test_only_r2_and_v2_are_documented_after_a_loss_and_only_with_a_record_open():
    p, s = Procedure(), Stream()
    assert p.document_after_loss("R2", s.miss(**PROBE_RLN), False) is None
    with pytest.raises(ProcedureError) as err:
        lost().document_after_loss("V1", s.miss(), False)
    assert str(err.value) == "step V1: only R2, V2 are documented after a loss"


def test_a_contralateral_vagal_response_answers_that_check_once():
    assert Procedure().note_contralateral_vagus("L", 120.0, 600.0) is False  # no record
    p = lost()
    assert p.note_contralateral_vagus("L", 120.0, 612.4) is True
    assert p.troubleshooting("L")["answers"]["contralateral_vagus"] == {
        "answer": "yes", "by": "monitor", "t_s": 120.0, "note": "response measured (612 uV)"}
    assert p.note_contralateral_vagus("L", 130.0, 700.0) is False
    q = lost()
    q.note_contralateral_vagus("L", 120.0, None)
    assert q.troubleshooting("L")["answers"]["contralateral_vagus"]["note"] == "response measured"


def test_a_new_loss_at_a_site_of_the_open_record_starts_the_site_again():
    p = Procedure()
    p.on_loss("L", "RLN", 100.0, 3)
    p.on_loss("L", "VAGUS", 105.0, 4)
    p.on_recovery("L", "RLN", 110.0)  # the vagus is still lost: the record stays open
    rec = p.on_loss("L", "RLN", 200.0, 9)
    assert rec["sites"]["RLN"] == {"t_s": 200.0, "stimulus_index": 9, "recovered_t_s": None}


def test_the_record_a_continued_loss_returns_is_a_copy():
    p = Procedure()
    p.on_loss("L", "RLN", 100.0, 3)
    p.on_recovery("L", "RLN", 110.0)
    rec = p.on_loss("L", "RLN", 120.0, 9, continued=True)
    rec["sites"]["RLN"]["continued"].append("spoilt")
    assert p.troubleshooting("L")["sites"]["RLN"]["continued"] == [{"t_s": 120.0, "stimulus_index": 9}]


def test_a_loss_that_completes_or_reopens_the_true_loss_starts_a_staging_recommendation_then():
    p = Procedure()
    p.set_plan(["L", "R"], 5.0)
    p.on_loss("L", "RLN", 100.0, 3)
    p.answer("L", "laryngeal_twitch", False, 110.0)
    p.answer("L", "contralateral_vagus", True, 111.0)
    assert p.staging_recommendation() is None  # the current is not known yet
    p.on_loss("L", "VAGUS", 130.0, 5, current_measured=True)
    assert p.staging_recommendation()["since_t_s"] == 130.0
    p.answer("L", "tube_position_ok", True, 135.0)  # the same basis: the same recommendation
    assert len(p.staging_history()) == 1
    p.on_recovery("L", "RLN", 140.0)
    p.on_recovery("L", "VAGUS", 141.0)
    assert p.staging_recommendation() is None
    p.on_loss("L", "RLN", 150.0, 8, continued=True)
    assert p.staging_recommendation()["since_t_s"] == 150.0 and len(p.staging_history()) == 2


def test_the_end_of_a_staging_basis_is_read_from_its_own_record():
    p = Procedure()
    p.set_plan(["L", "R"], 5.0)
    p.on_loss("R", "RLN", 50.0, 1)
    p.on_recovery("R", "RLN", 60.0)  # a recovered record of the other side
    p.on_loss("L", "RLN", 100.0, 3)
    p.set_verdict("L", "true_los", "seen", 110.0)
    p.set_plan(["L"], 120.0)
    assert p.staging_history()[0]["basis_end_reason"] == "plan changed"


def test_a_step_without_a_response_keeps_no_latency():
    from app.model import Measurement, Stimulus

    stim = Stimulus(index=4, t_s=1.0, site=Site.VAGUS, side=Side.L, source=Source.PROBE, set_mA=1.0, delivered_mA=1.0)
    m = Measurement(stim, Side.L.channel, True, None, True, 80.0, 6.0, 5.2)  # below the response threshold
    p = Procedure()
    v = p.capture_step(Step.V1, m, False, 2.0)
    assert (v["response"], v["latency_ms"], v["onset_latency_ms"]) == (False, None, None)
    v = p.capture_step(Step.V2, m, True, 3.0)
    assert (v["response"], v["latency_ms"], v["onset_latency_ms"]) == (True, 6.0, 5.2)
