"""``lnm sounds DIR``: the WAV files, read back with the standard ``wave`` module."""

from __future__ import annotations

import wave

import numpy as np
import pytest

from app.cli import main
from app.outputs import sounds
from app.settings import Settings

EXPECTED = [
    "alarm-high.wav", "alarm-medium.wav", "alarm-low.wav",
    "tone-stimulus.wav", "tone-response-left.wav", "tone-response-right.wav",
    "tone-no-current.wav", "tone-reminder.wav", "tone-mark.wav", "tone-selftest.wav", "tone-message.wav",
]


def read(path):
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getcomptype()) == (1, 2, "NONE")
        rate = w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(float) / 32767
    return rate, data


def test_writes_every_sound_and_prints_a_table(tmp_path, capsys):
    out = tmp_path / "sounds"
    assert main(["sounds", str(out)]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted(EXPECTED)
    for name in EXPECTED:
        assert name in printed
    assert "3+2, pause, 3+2" in printed
    settings = Settings()
    for stem, samples in sounds.all_sounds(settings).items():
        rate, data = read(out / f"{stem}.wav")
        assert rate == sounds.SAMPLE_RATE
        assert len(data) == len(samples)
        assert np.max(np.abs(data - samples)) <= 1.5 / 32767  # 16-bit rounding only
    # One full cycle: burst + interburst silence, looping seamlessly.
    rate, high = read(out / "alarm-high.wav")
    sig = sounds.signal_for("high")
    assert len(high) / rate == pytest.approx(sig.cycle_s(settings["alarms.high_repeat_s"]), abs=1 / rate)
    tail = high[int(sig.burst_s * rate) + 10 :]
    assert np.max(np.abs(tail)) == 0.0
    # silence = interburst minus the fall half-ramp of the last pulse and the rise half-ramp of the next
    assert len(tail) / rate == pytest.approx(settings["alarms.high_repeat_s"] - sig.ramp_s, abs=0.001)


def test_rate_and_profile_settings(tmp_path):
    cfg = tmp_path / "config"
    (cfg / "profiles").mkdir(parents=True)
    (cfg / "default.toml").write_text("[alarms]\nhigh_repeat_s = 10.0\n")
    assert main(["sounds", str(tmp_path / "o"), "--rate", "44100", "--config", str(cfg)]) == 0
    rate, high = read(tmp_path / "o" / "alarm-high.wav")
    assert rate == 44100
    sig = sounds.signal_for("high")
    assert len(high) / rate == pytest.approx(sig.cycle_s(10.0), abs=1 / rate)


def test_bad_config_and_unwritable_directory(tmp_path, capsys):
    cfg = tmp_path / "config"
    cfg.mkdir()
    (cfg / "default.toml").write_text("[alarms]\nhigh_repeat_s = 99.0\n")
    assert main(["sounds", str(tmp_path / "o"), "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "alarms.high_repeat_s" in err and "2.5-15 s" in err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["sounds", str(blocker / "sub")]) == 1
    assert "cannot create directory" in capsys.readouterr().err
