"""Crash resume keeps the times of the alarm system: an alarm raised at 9.5 s still shows
9.5 s after a restart, its acknowledgement time is kept, and an audio pause still running
ends when it would have ended (never later)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.alarms import AlarmKind
from app.engine.resume import resume_open_case
from app.record.journal import Journal
from engine_testkit import stepped


def _until(s, t_case: float) -> None:
    s.run_for(max(0.0, t_case - s.monitor.now_t()))


def _by_kind(mon):
    return {a["kind"]: a for a in mon.alarms_json()["active"]}


@pytest.mark.parametrize("gap_s", [8.0, 300.0])
def test_resume_keeps_onset_acknowledgement_and_pause_times(tmp_path, gap_s):
    path = tmp_path / "journal.db"
    s = stepped(journal=Journal(path), fake_analysis=True)
    s.run_for(0.5)
    case_id = s.must("case.start", patient_id="P1", planned_sides=["L"])["case_id"]
    mon = s.monitor
    _until(s, 9.5)
    mon.alarms.raise_condition(AlarmKind.NO_CURRENT, "APS-L", who="test")  # latched until acknowledged
    mon.tick()
    _until(s, 10.25)
    mon.alarms.raise_condition(AlarmKind.BOARD_FAULT, "over_current", who="test")
    mon.tick()
    _until(s, 12.0)
    s.must("alarm.ack", alarm="board_fault:over_current")
    _until(s, 13.0)
    s.must("alarm.pause_audio")
    _until(s, 20.0)
    before = _by_kind(mon)
    assert before["no_current"]["raised_t_s"] == pytest.approx(9.5, abs=0.02)
    pause_s = float(mon.settings["alarms.audio_pause_s"])
    mon.journal.close()  # the process dies here: no shutdown
    with Journal(path, readonly=True) as j:  # the case clock goes on from its last entry (by the wall clock)
        last_t = max(e.t_s for e in j.entries(case_id, blobs=False))

    s2 = stepped(journal=Journal(path), fake_analysis=True)
    s2.clock.advance(1234.5)  # a new process: its clock reads something else entirely
    away = datetime.now(UTC) + timedelta(seconds=gap_s)
    assert resume_open_case(s2.monitor, s2.monitor.journal, wall_clock=lambda: away) == case_id
    m2 = s2.monitor
    now_t = m2.now_t()
    assert last_t + gap_s - 0.01 <= now_t <= 20.0 + gap_s + 120.0  # not from zero, not from the new clock
    after = _by_kind(m2)
    assert after["no_current"]["raised_t_s"] == pytest.approx(9.5, abs=0.02)  # not "since the restart"
    assert after["no_current"]["acknowledged"] is False
    assert after["board_fault"]["raised_t_s"] == pytest.approx(10.25, abs=0.02)
    assert after["board_fault"]["acknowledged"] is True
    assert after["board_fault"]["acknowledged_t_s"] == pytest.approx(12.0, abs=0.02)
    audio = m2.alarms_json()
    if 13.0 + pause_s > now_t:  # the pause would still run: it ends when it would have ended
        assert audio["audio"] == "paused"
        assert audio["pause_remaining_s"] == pytest.approx(13.0 + pause_s - now_t, abs=0.1)
    else:  # it ended while the engine was away
        assert audio["audio"] == "normal"
        assert audio["sounding"] is not None  # the unacknowledged alarm sounds again
    m2.tick()
    assert _by_kind(m2)["no_current"]["raised_t_s"] == pytest.approx(9.5, abs=0.02)
