"""The ``lnm`` command's dispatch."""

from __future__ import annotations

from app import cli


def test_unknown_command_exits_2(capsys):
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_config_check_ok_and_bad(tmp_path, capsys):
    assert cli.main(["config-check"]) == 0
    (tmp_path / "default.toml").write_text("[alarms]\naudio_pause_s = 9999\n")
    assert cli.main(["config-check", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "alarms.audio_pause_s" in err and "10-300 s" in err
