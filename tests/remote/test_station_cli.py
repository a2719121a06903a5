"""``lnm station`` on the command line (adduser, acl, configuration refused with one clear
line and exit status 2) and the shipped broker configuration (``deploy/mosquitto``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.remote.mosquitto import find_mosquitto, free_port
from app.remote.mqttauth import acl_text
from app.station import config as sc
from app.station.auth import check_password
from waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


def lnm(*args: str) -> subprocess.CompletedProcess:
    """``lnm station ARGS`` in this process (the command's own entry point), output captured."""
    import contextlib
    import io

    from app.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(["station", *args])
        except SystemExit as exc:  # argparse
            rc = int(exc.code or 0)
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


def test_the_command_runs_as_a_program(tmp_path):
    r = subprocess.run([sys.executable, "-m", "app.cli", "station", "acl", "--config", str(tmp_path / "none.toml")],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not found" in r.stderr


def test_adduser_acl_and_the_broker_password(tmp_path):
    cfg = tmp_path / "station.toml"
    pw = tmp_path / "pw"
    pw.write_text("correct horse battery\n")
    mq = tmp_path / "mosquitto-passwd"
    r = lnm("adduser", "anna.rossi", "--name", "Dr Anna Rossi", "--ors", "or-1,or-2", "--config", str(cfg),
            "--password-file", str(pw), "--broker-passwd", str(mq), "--broker", "mqtts://broker.example:8883")
    assert r.returncode == 0, r.stderr
    r = lnm("adduser", "ben.kim", "--ors", "or-3", "--config", str(cfg), "--password-file", str(pw))
    assert r.returncode == 0, r.stderr
    loaded = sc.load(cfg)
    assert set(loaded.users) == {"anna.rossi", "ben.kim"} and loaded.users["anna.rossi"].ors == ("or-1", "or-2")
    assert loaded.users["anna.rossi"].name == "Dr Anna Rossi" and loaded.broker.host == "broker.example"
    assert check_password(loaded.users["anna.rossi"].password_hash, "correct horse battery")
    assert "correct horse" not in cfg.read_text() and oct(cfg.stat().st_mode & 0o777) == "0o600"
    assert mq.read_text().startswith("anna.rossi:$7$")
    r = lnm("acl", "--config", str(cfg))
    assert r.returncode == 0 and r.stdout == acl_text({"anna.rossi": ["or-1", "or-2"], "ben.kim": ["or-3"]})


@pytest.mark.parametrize("args, words", [
    (["adduser", "Anna", "--ors", "or-1"], "like anna.rossi"),
    (["adduser", "anna.rossi", "--ors", "OR 1"], "appliance ids"),
    (["adduser", "anna.rossi"], "--ors"),
    (["adduser", "anna.rossi", "--ors", "or-1", "--broker", "mqtt://broker.example"], "needs TLS"),
])
def test_bad_adduser_input_is_one_clear_line_and_status_2(tmp_path, args, words):
    pw = tmp_path / "pw"
    pw.write_text("long enough password\n")
    r = lnm(*args, "--config", str(tmp_path / "s.toml"), "--password-file", str(pw))
    assert r.returncode == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_short_password_is_refused(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("short\n")
    r = lnm("adduser", "anna.rossi", "--ors", "or-1", "--config", str(tmp_path / "s.toml"), "--password-file", str(pw))
    assert r.returncode == 2 and "too short" in r.stderr


@pytest.mark.parametrize("text, words", [
    ("[station]\nlisten = \"0.0.0.0:8080\"\n", "outside this machine"),
    ("[station]\nbroker_url = \"mqtt://broker.example\"\n", "needs TLS"),
    ("[station]\nlisten = \"nonsense\"\n", "HOST:PORT"),
    ("[station]\ncolour = \"blue\"\n", "unknown key 'colour'"),
    ("[users.\"anna.rossi\"]\nors = [\"or-1\"]\npassword_hash = \"plain\"\n", "not an argon2 hash"),
    ("[users.\"or-1\"]\nors = []\npassword_hash = \"$argon2id$x\"\n", "user names are like anna.rossi"),
    ("not toml [", "not valid TOML"),
])
def test_bad_station_configuration_names_the_file_and_the_key(tmp_path, text, words):
    cfg = tmp_path / "station.toml"
    cfg.write_text(text)
    r = lnm("--config", str(cfg))
    assert r.returncode == 2, r.stderr
    assert words in r.stderr and str(cfg) in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert lnm("--config", str(tmp_path / "missing.toml")).returncode == 2


def test_the_acl_example_is_what_the_generator_writes():
    example = (ROOT / "deploy" / "mosquitto" / "acl.example").read_text()
    assert example == acl_text({"anna.rossi": ["or-1", "or-2", "or-3"], "ben.kim": ["or-4", "or-5"]})


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed (Debian package mosquitto)")
def test_the_shipped_broker_configuration_starts_with_tls_on_both_listeners(tmp_path, pki):
    from app.remote.mqttauth import set_password

    tls = pki[0]
    folder = tmp_path / "lnm"
    folder.mkdir()
    set_password(folder / "passwd", "or-1", "x" * 12)
    (folder / "acl").write_text(acl_text({"anna.rossi": ["or-1"]}))
    conf = (ROOT / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    p1, p2 = free_port(), free_port()
    for old, new in (("/etc/mosquitto/lnm/ca.crt", str(tls.ca)), ("/etc/mosquitto/lnm/server.crt", str(tls.cert)),
                     ("/etc/mosquitto/lnm/server.key", str(tls.key)), ("/etc/mosquitto/lnm/", f"{folder}/"),
                     ("listener 8883", f"listener {p1} 127.0.0.1"), ("listener 8884", f"listener {p2} 127.0.0.1")):
        conf = conf.replace(old, new)
    if os.geteuid() == 0:
        conf = "user root\n" + conf
    (tmp_path / "m.conf").write_text(conf)
    proc = subprocess.Popen([find_mosquitto(), "-c", str(tmp_path / "m.conf")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        from app.remote.mosquitto import _listening

        wait_until(lambda: (_listening(p1) and _listening(p2)) or proc.poll() is not None)
        assert proc.poll() is None, proc.stdout.read()
        import paho.mqtt.client as mqtt

        from app.remote.config import BrokerAddress, configure_client

        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        configure_client(c, BrokerAddress("localhost", p1, True), username="or-1", password="x" * 12, ca=str(tls.ca))
        assert c.connect("localhost", p1, keepalive=5) == 0
        c.disconnect()
    finally:
        proc.terminate()
        proc.wait(10)
