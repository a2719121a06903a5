"""Audio backends: the mixer's policies, the capture backend, and the aplay backend
against fake devices (good, missing, dying, stalling, recovering)."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest

from app.outputs.audio import ALARM, FEEDBACK, AplayAudio, CaptureAudio, Mixer, aplay_command, to_pcm16
from firmware_bridge.clock import ManualClock
from waiting import wait_until

RATE = 48000


# ----------------------------------------------------------------------------- mixer


def test_alarm_voice_is_replaced_with_a_short_fade():
    m = Mixer(RATE, fade_s=0.005)
    m.play(ALARM, np.full(RATE, 0.5), "a")
    first = m.render(100)
    assert np.allclose(first, 0.5)
    m.play(ALARM, np.full(RATE, 0.25), "b")
    out = m.render(1000)
    fade = int(0.005 * RATE)
    assert out[0] == pytest.approx(0.75)  # old (fading from full) + new
    assert np.allclose(out[fade + 1 :], 0.25)  # old voice gone after the fade
    assert np.all(np.diff(out[:fade]) <= 1e-6)  # monotone fade, no click


def test_stop_fades_the_alarm_out():
    m = Mixer(RATE)
    m.play(ALARM, np.full(RATE, 0.5), "a")
    m.render(10)
    m.stop(ALARM)
    out = m.render(1000)
    assert out[0] > 0.4 and np.all(out[300:] == 0.0)
    assert not m.busy(ALARM)


def test_feedback_one_playing_one_pending_newest_wins():
    m = Mixer(RATE)
    m.play(FEEDBACK, np.full(100, 0.1), "t1")
    m.play(FEEDBACK, np.full(100, 0.2), "t2")
    m.play(FEEDBACK, np.full(100, 0.3), "t3")  # replaces the pending t2
    assert m.dropped_feedback == 1
    out = m.render(300)
    assert np.allclose(out[:100], 0.1) and np.allclose(out[100:200], 0.3) and np.all(out[200:] == 0)


def test_layers_mix_and_clip():
    m = Mixer(RATE, emg_prefill_s=0.0)
    m.play(ALARM, np.full(100, 0.7), "a")
    m.play(FEEDBACK, np.full(100, 0.6), "f")
    m.feed(np.full(100, 0.1))
    out = m.render(100)
    assert np.allclose(out, 1.0)  # 1.4 clipped


def test_emg_fifo_is_bounded_and_prefilled():
    m = Mixer(RATE, emg_max_lag_s=0.1, emg_prefill_s=0.04)
    m.feed(np.full(int(0.02 * RATE), 0.1))
    assert np.all(m.render(100) == 0)  # waiting for the prefill
    m.feed(np.full(int(0.03 * RATE), 0.1))
    assert np.allclose(m.render(100), 0.1)
    m.feed(np.arange(RATE, dtype=float) / RATE)  # one second: far beyond the lag bound
    assert m.dropped_emg_samples >= RATE - int(0.1 * RATE)
    out = m.render(int(0.1 * RATE))
    assert out[-1] == pytest.approx((RATE - 1) / RATE, abs=1e-6)  # newest kept


def test_to_pcm16_clips_and_rounds():
    data = np.frombuffer(to_pcm16(np.array([0.0, 1.0, -1.0, 2.0, 0.5])), dtype="<i2")
    assert list(data) == [0, 32767, -32767, 32767, 16384]


# ----------------------------------------------------------------------------- capture


def test_capture_records_what_and_when():
    clock = ManualClock(10.0)
    cap = CaptureAudio(clock)
    cap.play(ALARM, np.ones(RATE // 2), "alarm-high", gain=0.5)
    clock.advance(1.5)
    cap.stop(ALARM)
    cap.feed(np.full(480, 0.2))
    p = cap.played[0]
    assert (p.t, p.layer, p.tag, p.gain, p.duration_s) == (10.0, ALARM, "alarm-high", 0.5, 0.5)
    assert np.allclose(p.samples, 0.5)
    assert list(cap.stops) == [(11.5, ALARM)]
    assert cap.emg_samples == 480 and cap.emg_blocks[-1][2] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="audio layer"):
        cap.play("music", np.ones(3), "x")


def test_capture_failure_is_reported_once_and_plays_nothing():
    clock = ManualClock()
    cap = CaptureAudio(clock, keep_samples=False)
    calls = []
    cap.on_failure = calls.append
    cap.on_recovered = lambda: calls.append("recovered")
    cap.fail("speaker unplugged")
    cap.fail("again")
    assert cap.failed and calls == ["speaker unplugged"]
    cap.play(ALARM, np.ones(10), "x")
    assert len(cap.played) == 0
    cap.recover()
    assert not cap.failed and calls[-1] == "recovered"
    cap.play(ALARM, np.ones(10), "x")
    assert cap.played[0].samples is None


# ----------------------------------------------------------------------------- aplay


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def wait_for(pred, timeout=5.0):
    return wait_until(pred, timeout, interval=0.01)


@pytest.fixture
def backends():
    made = []

    def make(command, **kw):
        kw.setdefault("retry_s", 0.1)
        b = AplayAudio(rate=RATE, command=command, **kw)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def test_aplay_command_line():
    cmd = aplay_command("hw:1,0", 48000, 0.08)
    assert cmd[0] == "aplay" and "-D" in cmd and cmd[cmd.index("-D") + 1] == "hw:1,0"
    assert ["-f", "S16_LE"] == cmd[cmd.index("-f") : cmd.index("-f") + 2]
    assert "--buffer-time=80000" in cmd


def test_fake_device_receives_the_pcm_of_what_was_played(backends, tmp_path):
    sink = tmp_path / "pcm.raw"
    b = backends(py("import sys,shutil; "
                    f"shutil.copyfileobj(sys.stdin.buffer, open({str(sink)!r}, 'wb', buffering=0), 4096)"))
    tone = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(4800) / RATE)).astype(np.float32)
    t0 = time.monotonic()
    b.play(FEEDBACK, tone, "tone-test")
    assert time.monotonic() - t0 < 0.1  # returns at once
    assert wait_for(lambda: sink.exists() and sink.stat().st_size >= 2 * (4800 + RATE // 5))
    b.close()
    data = np.frombuffer(sink.read_bytes(), dtype="<i2")
    expected = np.frombuffer(to_pcm16(tone), dtype="<i2")
    first = int(np.flatnonzero(expected)[0])  # the sine starts at 0
    start = int(np.flatnonzero(data)[0]) - first
    assert np.array_equal(data[start : start + len(expected)], expected)
    assert not np.any(data[start + len(expected) :])  # silence after it
    assert not b.failed


def test_missing_aplay_is_reported(backends, monkeypatch):
    import subprocess

    tries = []
    real_popen = subprocess.Popen

    def counting_popen(cmd, *args, **kw):
        if cmd[0] == "/nonexistent/aplay":
            tries.append(cmd)
        return real_popen(cmd, *args, **kw)

    monkeypatch.setattr(subprocess, "Popen", counting_popen)
    got = []
    b = backends(["/nonexistent/aplay", "-q"], on_failure=got.append)
    assert wait_for(lambda: b.failed)
    assert "not found: install the alsa-utils package" in b.error
    assert wait_for(lambda: len(tries) >= 4)  # retries keep failing...
    assert got == [b.error]  # ...still one report


def test_device_that_exits_reports_status_and_stderr(backends):
    b = backends(py("import sys; "
                    "sys.stderr.write('aplay: main:831: audio open error: No such file or directory\\n'); sys.exit(1)"))
    assert wait_for(lambda: b.failed)
    assert "exited with status 1" in b.error
    assert "audio open error" in b.error


def test_device_dying_mid_stream_is_reported_and_restarted(backends):
    b = backends(py("import sys; sys.stdin.buffer.read(9600); sys.exit(3)"))
    assert wait_for(lambda: b.failed)
    assert "status 3" in b.error or "failed" in b.error
    assert wait_for(lambda: b.starts >= 2)  # the writer keeps trying


def test_device_recovers_after_a_failure(backends, tmp_path):
    marker = tmp_path / "tried"
    code = (
        "import os,sys,shutil\n"
        f"m={str(marker)!r}\n"
        "if not os.path.exists(m):\n"
        "    open(m,'w').close(); sys.exit(1)\n"
        "shutil.copyfileobj(sys.stdin.buffer, open(os.devnull,'wb'))\n"
    )
    events = []
    b = backends(py(code), recover_s=0.3, on_failure=events.append,
                 on_recovered=lambda: events.append("recovered"))
    assert wait_for(lambda: b.failed)
    assert wait_for(lambda: not b.failed)
    assert events[-1] == "recovered" and len(events) == 2


def test_stalled_device_is_reported_and_play_never_blocks(backends):
    # a device that never reads (it gives up after 30 s, so nothing is left behind)
    b = backends(py("import signal; signal.alarm(30); signal.pause()"), stall_s=0.3)
    assert wait_for(lambda: b.failed, timeout=5.0)
    assert "stalled" in b.error
    t0 = time.monotonic()
    for _ in range(50):
        b.play(ALARM, np.ones(RATE), "alarm-high")
        b.feed(np.ones(960))
    assert time.monotonic() - t0 < 0.5


def test_close_stops_the_writer_thread(backends):
    b = backends(py("import sys,shutil; shutil.copyfileobj(sys.stdin.buffer, open('/dev/null','wb'))"))
    assert wait_for(lambda: b.frames_written > 0)
    b.close()
    assert not any(t.name == "lnm-audio-writer" and t.is_alive() for t in threading.enumerate()
                   if t is b._thread)
