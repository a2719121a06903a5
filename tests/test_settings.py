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


# ----------------------------------------------------------------------------- bad files, rules across settings


def test_non_utf8_config_is_refused_naming_file_and_line(tmp_path: Path):
    (tmp_path / "default.toml").write_bytes(b"[rules]\n# caf\xe9 latin-1 comment\nlos_consecutive = 2\n")
    with pytest.raises(SettingError) as exc:
        settings.load(tmp_path)
    msg = str(exc.value)
    assert str(tmp_path / "default.toml") in msg and "not UTF-8" in msg and "line 2" in msg and "0xe9" in msg


def test_utf16_and_binary_configs_are_refused(tmp_path: Path):
    (tmp_path / "default.toml").write_bytes("[rules]\nlos_consecutive = 2\n".encode("utf-16"))
    with pytest.raises(SettingError, match="UTF-16"):
        settings.load(tmp_path)
    (tmp_path / "default.toml").write_bytes(b"\x00\x01\x02")
    with pytest.raises(SettingError, match="NUL"):
        settings.load(tmp_path)


def test_utf8_bom_is_accepted(tmp_path: Path):
    (tmp_path / "default.toml").write_bytes(b"\xef\xbb\xbf[rules]\nlos_consecutive = 3\n")
    assert settings.load(tmp_path)["rules.los_consecutive"] == 3


def test_missing_config_folder_and_folder_as_file(tmp_path: Path):
    with pytest.raises(SettingError, match="configuration folder .*nope: not found"):
        settings.load(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(SettingError, match="is a file, not a folder"):
        settings.load(tmp_path / "file")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "default.toml").mkdir()
    with pytest.raises(SettingError, match="default.toml: is a folder"):
        settings.load(tmp_path / "d")


@pytest.mark.parametrize(("hb", "timeout", "ok"), [(100, 500, True), (100, 200, True), (150, 200, False),
                                                   (200, 100, False), (200, 399, False), (200, 400, True)])
def test_link_timeout_must_be_twice_the_heartbeat(hb, timeout, ok):
    changes = {"link.heartbeat_ms": hb, "link.timeout_ms": timeout}
    if ok:
        Settings(changes)
        return
    with pytest.raises(SettingError) as exc:
        Settings(changes)
    assert "link.timeout_ms" in str(exc.value) and "link.heartbeat_ms" in str(exc.value)


def test_cross_rule_applies_to_changes_as_at_the_touchscreen():
    with pytest.raises(SettingError, match="link.heartbeat_ms"):
        Settings().with_changes({"link.heartbeat_ms": 200, "link.timeout_ms": 300}, "settings.set")


def test_media_roots_setting_takes_absolute_paths_only():
    assert Settings({"export.media_roots": "/media:/srv/usb"})["export.media_roots"] == "/media:/srv/usb"
    for bad in ("media", "/media:relative", "", "/a::/b"):
        with pytest.raises(SettingError, match="export.media_roots"):
            Settings({"export.media_roots": bad})


def test_last_valid_configuration_round_trip(tmp_path: Path):
    st = Settings({"rules.los_consecutive": 3, "ui.settings_pin": "4321"})
    path = settings.save_last_valid(st, tmp_path / "data", source="config/default.toml", profile="sensitive")
    assert path.stat().st_mode & 0o777 == 0o600
    loaded, meta = settings.load_last_valid(tmp_path / "data")
    assert loaded.as_dict() == st.as_dict() and meta["profile"] == "sensitive"
    assert meta["source"] == "config/default.toml"
    assert settings.load_last_valid(tmp_path / "elsewhere") is None


def test_last_valid_configuration_refuses_edits_damage_and_rules(tmp_path: Path):
    import json

    path = settings.save_last_valid(Settings(), tmp_path)
    doc = json.loads(path.read_text())
    doc["values"]["stim.probe_current_mA"] = 9.0
    path.write_text(json.dumps(doc))
    with pytest.raises(SettingError, match="checksum"):
        settings.load_last_valid(tmp_path)
    path.write_bytes(b"\xff\xfe garbage")
    with pytest.raises(SettingError, match=str(path)):
        settings.load_last_valid(tmp_path)
    path.write_text("{not json")
    with pytest.raises(SettingError, match="damaged"):
        settings.load_last_valid(tmp_path)
    with pytest.raises(TypeError):
        settings.save_last_valid({"stim.probe_current_mA": 1.0}, tmp_path)  # type: ignore[arg-type]
