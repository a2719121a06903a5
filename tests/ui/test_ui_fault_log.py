"""The touchscreen's record of its own unexpected errors (no display): what is kept, what
is sent to the engine's journal (each kind once, a few a minute at most) and in what words."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from app.ui import faults as F
from firmware_bridge.clock import ManualClock


def _raise(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def _fail_here(text: str) -> BaseException:
    return _raise(ValueError(text))


def test_a_fault_names_the_error_and_the_place_in_the_program():
    fault, send = F.FaultLog().add(_fail_here("bad value"), "showing the setup screen")
    assert send and fault.kind == "ValueError" and fault.message == "bad value"
    assert fault.location.startswith("test_ui_fault_log.py:") and fault.location.endswith("in _raise")
    assert "Traceback" in fault.trace and "bad value" in fault.trace
    screen = F.screen_text(fault)
    assert "Touchscreen program error" in screen and "not affected" in screen and "bad value" in screen
    text = F.journal_text(fault)
    assert text.startswith(F.JOURNAL_PREFIX) and "showing the setup screen" in text and "ValueError" in text


def test_the_same_fault_every_frame_is_journaled_once_and_counted():
    log = F.FaultLog()
    sent = [log.add(_fail_here(f"frame {i}"), "drawing the monitor screen")[1] for i in range(100)]
    assert sent == [True] + [False] * 99
    assert len(log) == 1 and log.faults[0].count == 100 and log.total == 100


def test_no_more_than_a_few_faults_a_minute_reach_the_journal():
    clock = ManualClock(0.0)
    log = F.FaultLog(max_per_minute=3, monotonic=clock.now)
    kinds = [ValueError, KeyError, TypeError, IndexError, ZeroDivisionError]
    sent = [log.add(_raise(k("x")), f"place {i}")[1] for i, k in enumerate(kinds)]
    assert sent == [True, True, True, False, False]
    clock.advance(61.0)
    assert log.add(_raise(LookupError("later")), "later")[1] is True
    assert len(log) == 6  # every kind is kept in the UI's own record


@given(st.text(max_size=5000))
def test_the_journal_text_always_fits_the_note(message):
    fault = F.fault_from(_raise(RuntimeError(message)), "anywhere", 0.0)
    assert len(F.journal_text(fault)) <= F.MAX_JOURNAL_CHARS
    assert F.journal_text(fault).startswith(F.JOURNAL_PREFIX)
