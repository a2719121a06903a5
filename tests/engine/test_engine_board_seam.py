"""Nothing fails silently at the board seam: link faults end to end, on the injected clock.

The whole system (virtual board, real wire protocol, the link's Receiver with every frame
validated, the engine) runs stepped on a ``ManualClock``; the faults are the core of
``lnm link-proxy`` (``firmware_bridge.faults.FaultPlan``) on the wire between board and
engine. Each test is one way a board or its cable lets the engine down: the alarm, its
words and its timing are asserted on the injected clock, and what the journal holds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app.api.clients import format_status
from app.ui.present import output_words
from engine_testkit import stepped
from firmware_bridge.faults import FaultPlan
from firmware_bridge.messages import PROTOCOL_VERSION, Capabilities, StimEpoch


def _system(tmp_path, **kw):
    """The stepped system with a fault plan on the wire from the start (replays need its history)."""
    return stepped(tmp_path, faults=FaultPlan(seed=1), **kw)


def _active(s, kind: str | None = None):
    return [a for a in s.monitor.alarms.state().alarms if kind is None or a.kind == kind]


def _journal(s, kind: str | None = None) -> list:
    j = s.monitor.journal
    case = s.monitor.case_id or s.monitor.last_case_id
    return [e for e in j.entries(case, blobs=False) if kind is None or e.kind == kind]


def _link_entries(s, event: str) -> list:
    return [e for e in _journal(s, "link") if e.payload.get("event") == event]


def _vagal_monitoring(s, side: str = "L", settle_s: float = 23.0) -> None:
    """A case with continuous vagal stimulation at 1 Hz, its baseline taken."""
    s.run_for(0.5)
    s.must("case.start", patient_id="SEAM", planned_sides=[side])
    s.board.control("aps_attach", side=side)
    s.must("aps.side", side=side)
    s.must("stim.output", output="aps", on=True)
    s.run_for(settle_s)


class EpochSpy:
    """When each stimulus epoch reached the engine (engine clock)."""

    def __init__(self, s) -> None:
        self.times: list[float] = []
        self.tokens: list[int | None] = []
        board = s.monitor.board
        real = board.message

        def spy(msg):
            if isinstance(msg, StimEpoch):
                self.times.append(s.clock.now())
                self.tokens.append(msg.config_token)
            real(msg)

        board.message = spy


def _step_until(s, pred, limit_s: float) -> bool:
    end = s.clock.now() + limit_s
    while s.clock.now() < end:
        s.step()
        if pred():
            return True
    return False


# ----------------------------------------------------------------------------- a half-alive board


def test_a_half_alive_board_raises_the_high_alarm_within_two_periods_and_shows_stimulation_unknown(tmp_path):
    s = _system(tmp_path, seed=21)
    _vagal_monitoring(s)
    m = s.monitor
    spy = EpochSpy(s)
    s.run_for(3.0)
    assert spy.tokens and all(t is not None for t in spy.tokens)  # a board of protocol 1.1: tokens echoed
    assert m.state_snapshot()["stim"]["aps"]["state"] == "on"
    # a noisy USB line: every large frame lost, heartbeats and status still arrive
    s.fault("drop StimEpoch")
    assert _step_until(s, lambda: _active(s, "monitoring_data_missing"), 10.0)
    last = spy.times[-1]
    delay = s.clock.now() - last
    assert 2.0 <= delay <= 2 * 1.0 + 0.1, delay  # two periods at 1 Hz (+ the flow margin), never early
    (alarm,) = _active(s, "monitoring_data_missing")
    assert alarm.priority == "high" and alarm.key == "epochs:APS"
    assert alarm.message.startswith("No stimulus responses from the vagal electrode for 2.")
    assert "expected 1 per second" in alarm.message and "NOT being monitored" in alarm.message
    assert not _active(s, "board_link_lost")  # heartbeats arrive: not a lost link
    st = s.command("state.get")["result"]
    assert st["stim"]["aps"]["on"] is True and st["stim"]["aps"]["state"] == "unknown"
    assert "no stimulus responses from the vagal electrode" in st["stim"]["aps"]["state_reason"]
    assert output_words("APS", st["stim"]["aps"]) == "APS: UNKNOWN"
    text = format_status(st)
    assert "APS UNKNOWN" in text and "APS stimulation UNKNOWN (commanded on)" in text
    assert "DATA MISSING: no stimulus responses from the vagal electrode" in text
    (entry,) = _link_entries(s, "data_missing")
    assert entry.payload["detail"]["key"] == "epochs:APS"

    # the vagus is cut while nothing arrives; reported as soon as epochs come back
    s.board.control("transect", side="L", site="VAGUS")
    s.run_for(5.0)
    assert not [e for e in s.events if e.get("category") == "rule" and e.get("kind") == "loss_of_signal"]
    s.fault("clear")
    back = s.clock.now()
    assert _step_until(s, lambda: any(a.kind == "loss_of_signal" for a in _active(s)), 6.0)
    assert s.clock.now() - back < 4.0
    (alarm,) = _active(s, "monitoring_data_missing")  # latched until acknowledged: the nurse learns of it
    assert not alarm.condition_active
    ended = _link_entries(s, "data_missing_ended")
    assert ended and ended[-1].payload["detail"]["why"] == "arrives"
    assert s.command("state.get")["result"]["stim"]["aps"]["state"] == "on"
    transitions = [e.payload["transition"] for e in _journal(s, "alarm")
                   if e.payload.get("alarm_id") == "monitoring_data_missing:epochs:APS"]
    assert transitions[:2] == ["raised", "condition_ended"]


def test_an_emg_stall_is_an_alarm_high_only_while_vagal_monitoring_runs(tmp_path):
    s = _system(tmp_path, seed=22)
    s.run_for(0.5)
    s.must("case.start", patient_id="EMG", planned_sides=["L"])
    s.run_for(2.0)
    s.fault("drop EmgBlock")
    t0 = s.clock.now()
    assert _step_until(s, lambda: _active(s, "board_data_missing"), 3.0)
    block_s = float(s.monitor.settings["acq.stream_block_ms"]) / 1000.0
    assert s.clock.now() - t0 <= block_s + 0.5 + 0.1 + 0.02
    (alarm,) = _active(s, "board_data_missing")
    assert alarm.priority == "medium" and alarm.message.startswith("No EMG from the board for")
    # continuous vagal monitoring starts: the same missing EMG is now high priority
    s.board.control("aps_attach", side="L")
    s.must("stim.output", output="aps", on=True)
    s.run_for(0.1)
    assert [a.key for a in _active(s, "monitoring_data_missing")] == ["emg"]
    assert not _active(s, "board_data_missing")
    s.fault("clear")
    s.run_for(1.0)
    assert not [a for a in _active(s, "monitoring_data_missing") if a.condition_active]


def test_normal_use_raises_no_data_alarm(tmp_path):
    """Start-up, outputs on and off, rate changes, a case closed and the next opened: the
    data-flow supervision never cries wolf."""
    s = _system(tmp_path, seed=23)
    s.run_for(1.0)
    s.must("case.start", patient_id="A", planned_sides=["L", "R"])
    s.board.control("aps_attach", side="L")
    s.board.control("probe", contact="nerve", site="VAGUS", side="R")
    s.must("stim.output", output="aps", on=True)
    s.run_for(5.0)
    for rate in (4.0, 30.0, 1.0, 12.0):
        s.must("stim.set", output="probe", rate_hz=rate)
        s.must("stim.output", output="probe", on=True)
        s.run_for(2.0)
        s.must("stim.output", output="probe", on=False)
        s.run_for(0.5)
    s.must("stim.set", output="aps", rate_hz=3.0)
    s.run_for(3.0)
    s.must("stim.output", output="aps", on=False)
    s.run_for(3.0)
    s.must("case.close")
    s.run_for(2.0)
    s.must("case.start", patient_id="B", planned_sides=["L"])
    s.must("stim.output", output="aps", on=True)
    s.run_for(5.0)
    assert not [e for e in s.events if e.get("kind") == "data_missing"]
    assert not _active(s, "monitoring_data_missing") and not _active(s, "board_data_missing")
    assert s.monitor.board.link_json()["invalid"] == 0


# ----------------------------------------------------------------------------- CRC-valid but wrong frames


def test_replayed_epochs_are_never_journaled_and_never_recover_a_cut_nerve(tmp_path):
    s = _system(tmp_path, seed=24)
    _vagal_monitoring(s)
    s.board.control("transect", side="L", site="VAGUS")
    assert _step_until(s, lambda: any(a.kind == "loss_of_signal" for a in _active(s)), 10.0)
    before = len(_journal(s, "stimulus"))
    truth_before = len(s.board.truth)
    for _ in range(3):  # old epochs (good responses from before the cut) sent again
        s.fault("replay StimEpoch n=30")
        s.run_for(1.0)
    assert len(_journal(s, "stimulus")) - before <= len(s.board.truth) - truth_before
    assert not [e for e in s.events if e.get("kind") == "signal_recovered"]
    t = [e.t_s for e in _journal(s, "stimulus")]
    assert t == sorted(t)  # nothing back-dated
    h = s.monitor.board.health()
    assert h["replayed"] + h["duplicates"] >= 30
    (alarm,) = _active(s, "board_invalid_data")
    assert alarm.message.startswith("Board sends invalid data: stimulus epoch")
    assert (_link_entries(s, "invalid_data")[0].payload["detail"]["reason"] in ("", "replayed", "duplicate"))


def test_sample_rate_zero_and_empty_epochs_never_stop_the_engine(tmp_path):
    s = _system(tmp_path, seed=25)
    _vagal_monitoring(s, settle_s=3.0)
    journaled = len(_journal(s, "stimulus"))
    s.fault("mutate StimEpoch sample_rate_hz=0 count=2")
    s.fault("mutate EmgBlock sample_rate_hz=0 count=3")
    s.run_for(2.5)
    s.fault("mutate StimEpoch n=0 count=1")
    s.fault("mutate EmgBlock n=0 count=1")
    s.run_for(1.5)
    assert s.command("state.get")["ok"]
    assert len(_journal(s, "stimulus")) >= journaled + 1  # the good epochs between go on being measured
    for e in _journal(s, "stimulus"):  # its own waveform, or a reference into the stream
        assert (e.payload.get("waveform") or e.payload["waveform_in_stream"])["sample_rate_hz"] > 0
    by = s.monitor.board.health()["invalid_by_reason"]
    assert by.get("sample_rate", 0) == 5 and by.get("sample_count", 0) == 2
    (alarm,) = _active(s, "board_invalid_data")
    assert alarm.message.startswith("Board sends invalid data: ")
    assert "It is thrown away, not measured." in alarm.message
    assert "INVALID DATA: board sends invalid data" in format_status(s.command("state.get")["result"])
    # ten seconds without an invalid frame: the alarm ends by itself, journaled
    s.run_for(10.5)
    assert not _active(s, "board_invalid_data")
    assert _link_entries(s, "data_valid")


def test_protocol_version_2_is_refused_with_the_alarm_and_no_stimulation(tmp_path):
    caps = Capabilities(protocol_version=2, firmware_version="future 2.0", board_id="VB-V2", simulated=True)
    s = _system(tmp_path, seed=26, board_kwargs={"capabilities": caps})
    s.run_for(1.0)
    (alarm,) = _active(s, "board_not_supported")
    assert alarm.priority == "high"
    assert "protocol version 2" in alarm.message and f"supports protocol version {PROTOCOL_VERSION}" in alarm.message
    s.must("case.start", patient_id="V2", planned_sides=["L"])
    reply = s.command("stim.output", output="aps", on=True)
    assert not reply["ok"] and reply["error"]["code"] == "board_unavailable"
    assert "not supported" in reply["error"]["message"]
    s.monitor.stim.aps.on = True  # even an output marked on by mistake never reaches this board
    s.monitor.board.configure()
    s.run_for(3.0)
    assert not s.board.truth and not s.board.stimulating
    st = s.command("state.get")["result"]
    assert st["stim"]["aps"]["state"] == "unknown" and st["link"]["board"] == "refused"
    assert st["stim"]["aps"]["state_reason"] == "the board is not supported: stimulation is unavailable"
    assert "APS stimulation UNKNOWN (commanded on): the board is not supported: stimulation is unavailable" \
        in format_status(st)
    assert "BOARD NOT SUPPORTED: board VB-V2 (firmware future 2.0) claims protocol version 2" in format_status(st)
    # refused before the case opened: the case's record says so from its start
    board = _link_entries(s, "health")[0].payload["detail"]["board"]
    assert board["state"] == "refused" and "protocol version 2" in board["refusal"]


def test_a_board_refused_then_answering_with_supported_capabilities_is_accepted(tmp_path):
    s = _system(tmp_path, seed=27)
    s.fault("mutate Capabilities protocol_version=2 count=1")
    s.run_for(1.0)
    assert _active(s, "board_not_supported")
    s.board.control("reset")  # the board restarts (watchdog) and answers Hello as it should
    assert _step_until(s, lambda: not _active(s, "board_not_supported"), 3.0)
    assert s.monitor.board.board_state == "accepted"
    assert [e.kind.value for e in s.link_events if e.kind.value in ("incompatible", "board_accepted")] == [
        "incompatible", "board_accepted"]


def test_board_time_2_63_is_never_journaled_and_a_resume_keeps_a_sane_clock(tmp_path):
    from app.engine.resume import resume_open_case

    s = _system(tmp_path, seed=28)
    _vagal_monitoring(s, settle_s=3.0)
    for kind in ("StimEpoch", "BoardHeartbeat", "BoardStatus", "EmgBlock"):
        s.fault(f"mutate {kind} board_time_us={2**63} count=1")
    s.run_for(3.0)
    case_id = s.monitor.case_id
    now_t = s.monitor.now_t()
    for e in _journal(s):  # (an EMG block may begin a moment before the case)
        low = 0.0 if e.kind == "stimulus" else -1.0
        assert low <= e.t_s <= now_t + 0.001, (e.kind, e.t_s)
    assert s.monitor.board.health()["invalid_by_reason"].get("board_time", 0) >= 4
    journal = s.monitor.journal
    journal.close()  # the engine dies here (power cut)

    from app.record.journal import Journal

    j2 = Journal(tmp_path / "journal.db")
    s2 = stepped(None, seed=28, journal=j2)
    assert resume_open_case(s2.monitor, j2) == case_id
    assert now_t - 1.0 <= s2.monitor.now_t() <= now_t + 60.0
    s2.run_for(3.0)
    for e in j2.entries(case_id, kinds=["stimulus"], blobs=False):
        assert 0.0 <= e.t_s <= s2.monitor.now_t() + 0.001
    j2.close()


def test_a_128_kib_header_never_raises_link_lost(tmp_path):
    s = _system(tmp_path, seed=29)
    _vagal_monitoring(s, settle_s=3.0)
    stimuli = s.monitor.counters["stimuli"]
    s.fault("header StimEpoch 131072")  # 128 KiB: the most a StimEpoch may hold, never completed
    s.run_for(3.0)
    s.fault("header EmgBlock 131073")  # beyond any frame
    s.run_for(3.0)
    assert not [e for e in s.link_events if e.kind.value == "lost"]
    assert not _active(s, "board_link_lost") and not _active(s, "monitoring_data_missing")
    assert s.monitor.counters["stimuli"] >= stimuli + 5
    h = s.monitor.board.health()
    assert h["truncated"] == 1 and h["oversize"] == 1


# ----------------------------------------------------------------------------- health

def test_link_health_is_journaled_when_a_case_opens_every_minute_and_at_close_and_reported(tmp_path):
    from app.record.document import build_document
    from app.record.report import board_link_line

    s = _system(tmp_path, seed=30)
    _vagal_monitoring(s, settle_s=1.0)
    s.run_for(125.0)
    s.fault("drop StimEpoch count=2")
    s.fault("replay BoardHeartbeat n=1")
    s.run_for(5.0)
    case_id = s.monitor.case_id
    s.must("case.close")
    health = [e.payload["detail"] for e in s.monitor.journal.entries(case_id, kinds=["link"], blobs=False)
              if e.payload.get("event") == "health"]
    assert [h["why"] for h in health] == ["case opened", "periodic", "periodic", "case closed"]
    assert health[-1]["frames_ok"] > health[0]["frames_ok"] and health[-1]["epochs"]["APS"]["arrived"] > 100
    doc = build_document(s.monitor.journal, case_id)
    link = doc["board_link"]
    assert link["frames_ok"] == health[-1]["frames_ok"] - health[0]["frames_ok"]
    assert link["replayed"] + link["duplicates"] >= 1 and link["lost"] == 0
    line = board_link_line(link)
    assert line.startswith(f"Board link during the case: {link['frames_ok']:,} frames, 0 CRC errors")
    assert not [t for t in doc["timeline"] if "health" in t["text"]]


# ----------------------------------------------------------------------------- attribution


def _probe_switches(tmp_path: Path, caps: Capabilities | None, switches: int = 8):
    """The probe at 4 Hz on the right RLN, moved to the right vagus (and back) right after a
    pulse, the selection changed at the same moment: the epoch of that pulse is in flight.
    The patient's right RLN answers at 3.35 ms: read as vagal, a non-recurrent nerve."""
    board = {"patient_overrides": {"rln_latency_ms": {"R": 3.35}}}
    if caps is not None:
        board["capabilities"] = caps
    s = _system(tmp_path, seed=31, board_kwargs=board)
    s.run_for(0.5)
    s.must("case.start", patient_id="ATTR", planned_sides=["R"])
    s.must("stim.set", output="probe", rate_hz=4.0)
    s.board.control("probe", contact="nerve", site="RLN", side="R")
    s.must("probe.site", site="RLN", side="R")
    s.must("stim.output", output="probe", on=True)
    s.run_for(2.0)
    site = "RLN"
    for k in range(switches):
        n = len(s.board.truth)
        assert _step_until(s, lambda n=n: len(s.board.truth) > n, 1.0)
        s.run_for(0.005 + 0.004 * k)  # a few ms after the pulse: its epoch arrives ~60 ms later
        site = "VAGUS" if site == "RLN" else "RLN"
        s.board.control("probe", contact="nerve", site=site, side="R")
        s.must("probe.site", site=site, side="R")
        s.run_for(1.3)
    s.must("stim.output", output="probe", on=False)
    s.run_for(0.5)
    return s


def _attributed_vs_truth(s) -> list[tuple[str, str | None, float]]:
    """(site attributed, site the board's pulse really hit, latency) per journaled probe stimulus."""
    origin = s.monitor.case_origin
    truth = [t for t in s.board.truth if t.output.name == "PROBE"]
    out = []
    for e in _journal(s, "stimulus"):
        p = e.payload
        onset = origin + float(p["t_s"])
        best = min(truth, key=lambda t: abs(s.board.origin + t.t - onset))
        assert abs(s.board.origin + best.t - onset) < 0.02
        out.append((p["site"], best.target.split("-")[0] if best.target else None, p.get("latency_ms")))
    return out


@pytest.mark.parametrize("tokens", [True, False], ids=["config-token", "board-time"])
def test_switching_the_probe_site_never_attributes_a_stimulus_in_flight_to_the_new_site(tmp_path, tokens):
    caps = None if tokens else Capabilities(protocol_version=PROTOCOL_VERSION, firmware_version="board 1.0",
                                            board_id="VB-NOTOKEN", simulated=True, config_token=False)
    s = _probe_switches(tmp_path, caps)
    assert s.monitor.stim.tokens_supported is tokens
    pairs = _attributed_vs_truth(s)
    assert len(pairs) > 30
    wrong = [(a, t, lat) for a, t, lat in pairs if a != t]
    assert not wrong, wrong
    assert not [e for e in s.events if e.get("kind") == "nonrecurrent_nerve_suspected"]
    assert not [e for e in _journal(s, "rule_event") if e.payload.get("kind") == "nonrecurrent_nerve_suspected"]


def test_a_selection_change_while_the_probe_runs_sends_a_new_token_and_the_board_applies_it(tmp_path):
    s = _system(tmp_path, seed=32)
    s.run_for(0.5)
    s.must("case.start", patient_id="TOK", planned_sides=["R"])
    spy = EpochSpy(s)
    s.must("stim.output", output="probe", on=True)
    s.run_for(1.0)
    first = set(spy.tokens)
    s.must("probe.site", site="RLN", side="R")
    s.run_for(1.0)
    assert len(set(spy.tokens) - first) == 1  # one new configuration, same rhythm
    gaps = [b - a for a, b in zip(spy.times, spy.times[1:], strict=False)]
    assert max(gaps) < 0.25 + 0.02  # the board kept its 4 Hz rhythm across the change
