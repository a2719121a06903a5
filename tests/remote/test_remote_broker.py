"""The broker's access control, against a real Mosquitto with TLS and the ACL that
``lnm station acl`` writes: appliances publish only under their own topics, readers read
only their assigned ORs and write only to those ORs' inboxes under their own name."""

from __future__ import annotations

import subprocess

import paho.mqtt.client as mqtt
import pytest

from app.remote.mqttauth import acl_text, password_line
from remote_accounts import APPLIANCES, READERS
from waiting import wait_until

pytestmark = pytest.mark.timeout(120)


def test_password_lines_are_what_mosquitto_passwd_checks(tmp_path):
    line = password_line("anna.rossi", "s3cret äé")
    user, _, h = line.partition(":")
    assert user == "anna.rossi" and h.startswith("$7$101$")
    assert password_line("x.y", "a", salt=b"0" * 12) == password_line("x.y", "a", salt=b"0" * 12)
    assert password_line("x.y", "a") != password_line("x.y", "a")  # fresh salt
    with pytest.raises(ValueError):
        password_line("bad:user", "x")


def test_acl_refuses_names_that_would_break_it():
    with pytest.raises(ValueError, match="station user name"):
        acl_text({"or-1": ["or-2"]})  # a reader named like an appliance would get its rights
    with pytest.raises(ValueError, match="appliance id"):
        acl_text({"anna.rossi": ["or/1/#"]})
    text = acl_text({"anna.rossi": ["or-1"]})
    assert "topic write lnm/v1/or-1/inbox/anna.rossi" in text and "pattern write lnm/v1/%u/state" in text


def test_wrong_password_and_no_tls_are_refused(broker, collectors):
    c = collectors(broker, "or-1", "not-the-password")
    assert c.client  # connects asynchronously
    assert wait_until(lambda: c.refused is not None)
    assert not c.connected.is_set()
    # plain MQTT to the TLS listener does not get through either
    plain = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    plain.username_pw_set("or-1", APPLIANCES["or-1"])
    with pytest.raises(Exception):  # noqa: B017 - the TLS listener drops a plain client in any of several ways
        plain.connect("localhost", broker.port, keepalive=5)
        rc = plain.loop(timeout=2.0)
        rc = plain.loop(timeout=2.0) if rc == 0 else rc
        if rc != 0:
            raise ConnectionError(rc)
        raise AssertionError("a plain client got through")


def test_foreign_appliance_cannot_publish_under_another_s_topics(broker, collectors, pki):
    anna = collectors(broker, "anna.rossi", READERS["anna.rossi"][0])
    assert anna.wait_connected()
    anna.subscribe("lnm/v1/#")
    or1 = collectors(broker, "or-1", APPLIANCES["or-1"])
    assert or1.wait_connected()
    own = or1.publish("lnm/v1/or-1/state", {"v": 1, "who": "or-1"})
    forged = or1.publish("lnm/v1/or-2/state", {"v": 1, "who": "forged by or-1"})
    inbox = or1.publish("lnm/v1/or-2/inbox/anna.rossi", {"v": 1, "type": "message"})
    # an appliance authenticated by client certificate (CN or-2), on the certificate listener
    or2 = collectors(broker, None, None, cert=pki[1]["or-2"], port=broker.mosquitto.cert_port)
    assert or2.wait_connected()
    genuine = or2.publish("lnm/v1/or-2/state", {"v": 1, "who": "or-2"})
    forged2 = or2.publish("lnm/v1/or-1/alarm", {"v": 1, "who": "forged by or-2"})
    for info in (own, forged, inbox, genuine, forged2):
        info.wait_for_publish(5)
    assert anna.wait_for(lambda: len(anna.on("/state")) >= 2)
    or2.publish("lnm/v1/or-2/health", {"v": 1, "end": True}).wait_for_publish(5)
    assert anna.wait_for(lambda: anna.on("/health"))
    whos = [p.get("who") for _t, p, _r in anna.messages]
    assert "or-1" in whos and "or-2" in whos
    assert not any(str(w).startswith("forged") for w in whos), whos
    assert not [t for t, _p, _r in anna.messages if "/inbox/" in t]
    # MQTT 5: the broker says so to the forger
    assert or1.acks[forged.mid].is_failure and or2.acks[forged2.mid].is_failure
    assert not or1.acks[own.mid].is_failure


def test_reader_sees_only_assigned_ors_and_writes_only_their_inboxes(broker, collectors):
    for name in APPLIANCES:
        c = collectors(broker, name, APPLIANCES[name])
        assert c.wait_connected()
        c.subscribe(f"lnm/v1/{name}/inbox/+")
        c.publish(f"lnm/v1/{name}/status", {"v": 1, "status": "online", "appliance": name}, retain=True)
    anna = collectors(broker, "anna.rossi", READERS["anna.rossi"][0])
    assert anna.wait_connected()
    anna.subscribe("lnm/v1/#")
    assert anna.wait_for(lambda: len(anna.on("/status")) >= 2)
    ben = collectors(broker, "ben.kim", READERS["ben.kim"][0])
    assert ben.wait_connected()
    ben.subscribe("lnm/v1/+/status")
    assert ben.wait_for(lambda: ben.on("/status"))
    import time
    time.sleep(0.5)
    assert sorted(p["appliance"] for p in anna.on("/status")) == ["or-1", "or-2"]  # or-3 is invisible
    assert [p["appliance"] for p in ben.on("/status")] == ["or-3"]
    ok = anna.publish("lnm/v1/or-1/inbox/anna.rossi", {"v": 1, "type": "message", "n": 1})
    unassigned = anna.publish("lnm/v1/or-3/inbox/anna.rossi", {"v": 1, "type": "message", "n": 2})
    impersonated = anna.publish("lnm/v1/or-1/inbox/ben.kim", {"v": 1, "type": "message", "n": 3})
    command = anna.publish("lnm/v1/or-1/state", {"v": 1, "forged": True})
    for info in (ok, unassigned, impersonated, command):
        info.wait_for_publish(5)
    assert not anna.acks[ok.mid].is_failure
    assert all(anna.acks[i.mid].is_failure for i in (unassigned, impersonated, command))


def test_mosquitto_passwd_accepts_our_password_file(tmp_path):
    # the broker's own tool reads and rewrites a file with our lines without complaint
    from app.remote.mqttauth import set_password

    f = tmp_path / "pw"
    set_password(f, "anna.rossi", "one")
    set_password(f, "or-1", "two")
    set_password(f, "anna.rossi", "three")  # replaced, not duplicated
    assert [line.split(":")[0] for line in f.read_text().splitlines()] == ["or-1", "anna.rossi"]
    proc = subprocess.run(["mosquitto_passwd", "-b", str(f), "ben.kim", "four"], capture_output=True, text=True)
    if proc.returncode == 127:
        pytest.skip("mosquitto_passwd is not installed")
    assert proc.returncode == 0, proc.stderr
    assert len(f.read_text().splitlines()) == 3
