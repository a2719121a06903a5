"""The settings schema: defaults from the clinical reference, clear rejections."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from app import settings
from app.settings import SCHEMA, SettingError, Settings


def test_shipped_config_and_profiles_validate():
    s = settings.load()
    assert s["stim.probe_current_mA"] == 1.0
    assert s["analysis.event_threshold_uV"] == 100.0
    assert s["rules.los_consecutive"] == 2
    assert s["rules.aps_baseline_count"] == 20
    for profile in settings.list_profiles():
        settings.load(profile=profile)
    assert settings.load(profile="sensitive")["stim.probe_current_mA"] == 0.5


def test_out_of_range_names_setting_unit_and_range():
    with pytest.raises(SettingError) as exc:
        Settings({"stim.probe_current_mA": 20})
    msg = str(exc.value)
    assert "stim.probe_current_mA" in msg and "mA" in msg and "0.1-10 mA" in msg


@pytest.mark.parametrize("value", ["abc", None, [], float("nan"), True])
def test_nonsense_is_rejected(value):
    with pytest.raises(SettingError, match="stim.pulse_width_us"):
        Settings({"stim.pulse_width_us": value})


def test_integer_setting_refuses_fractions():
    with pytest.raises(SettingError, match="rules.los_consecutive"):
        Settings({"rules.los_consecutive": 2.5})


def test_bandpass_must_stay_below_nyquist():
    with pytest.raises(SettingError, match="half the sample rate"):
        Settings({"acq.sample_rate_hz": 5000, "analysis.bandpass_high_hz": 3000})


def test_corrupted_config_file_names_the_file(tmp_path: Path):
    (tmp_path / "default.toml").write_text("[stim\nprobe_current_mA = ")
    with pytest.raises(SettingError) as exc:
        settings.load(tmp_path)
    assert str(tmp_path / "default.toml") in str(exc.value) and "TOML" in str(exc.value)


def test_unknown_setting_in_file_is_refused(tmp_path: Path):
    (tmp_path / "default.toml").write_text("[stim]\nprobe_curent_mA = 1.0\n")
    with pytest.raises(SettingError, match="probe_curent_mA"):
        settings.load(tmp_path)


def test_bad_value_in_profile_names_profile(tmp_path: Path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "x.toml").write_text("[rules]\nlos_consecutive = 0\n")
    with pytest.raises(SettingError) as exc:
        settings.load(tmp_path, "x")
    assert "x.toml" in str(exc.value) and "1-10" in str(exc.value)


@given(key=st.sampled_from(sorted(k for k, s in SCHEMA.items() if s.kind in (int, float))),
       value=st.floats(allow_nan=False, allow_infinity=False, min_value=-1e7, max_value=1e7))
def test_any_number_is_accepted_exactly_when_in_range(key, value):
    s = SCHEMA[key]
    if s.kind is int:
        value = round(value)
    inside = s.minimum <= value <= s.maximum
    try:
        s.validate(value)
    except SettingError as exc:
        assert not inside, exc
        assert key in str(exc)
    else:
        assert inside
