"""The reading station's web server from the outside, over plain HTTP (no browser): hostile
requests, wrong credentials and brute force, a broker that refuses a reader, a flood of live
streams, and three cases in a row at one OR, each starting empty at the station. A real
broker (TLS, passwords, the shipped ACL) and engines on the virtual board."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from dataclasses import replace
from typing import Any

import pytest

from app.record.journal import Journal
from app.station import config as sc
from app.station.auth import MAX_FAILURES, hash_password, verify_audit_log
from remote_accounts import READERS
from waiting import wait_until

pytestmark = pytest.mark.timeout(240)


class Web:
    """One browser's worth of HTTP: a session cookie and the CSRF token, nothing else."""

    def __init__(self, server: Any) -> None:
        self.host, self.port = server.server_address[:2]
        self.cookie = ""
        self.csrf = ""

    def request(self, method: str, path: str, body: bytes | str | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=15)
        try:
            h = dict(headers or {})
            if self.cookie and "Cookie" not in h:
                h["Cookie"] = self.cookie
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def login(self, user: str, password: str) -> tuple[int, str]:
        from urllib.parse import urlencode

        status, headers, body = self.request("POST", "/login", urlencode({"username": user, "password": password}),
                                             {"Content-Type": "application/x-www-form-urlencoded"})
        if status == 303:
            self.cookie = headers["set-cookie"].split(";")[0]
            self.csrf = json.loads(self.request("GET", "/api/me")[2])["csrf"]
        return status, body.decode("utf-8", "replace")

    def post_json(self, path: str, obj: Any, csrf: str | None = None) -> tuple[int, Any]:
        raw = obj if isinstance(obj, (bytes, str)) else json.dumps(obj)
        status, _h, body = self.request("POST", path, raw, {"Content-Type": "application/json",
                                                             "X-CSRF-Token": self.csrf if csrf is None else csrf})
        return status, json.loads(body or b"null")

    def get_json(self, path: str) -> tuple[int, Any]:
        status, _h, body = self.request("GET", path)
        return status, json.loads(body or b"null")


class Stream(threading.Thread):
    """A live stream (``/api/stream``) read until the station closes it."""

    def __init__(self, web: Web) -> None:
        super().__init__(daemon=True)
        self.conn = http.client.HTTPConnection(web.host, web.port, timeout=20)
        self.conn.request("GET", "/api/stream", headers={"Cookie": web.cookie})
        self.sock = self.conn.sock  # the connection lets go of it once the response says "close"
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.snapshot: dict[str, Any] | None = None
        self.closed = threading.Event()
        if self.status == 200:
            self.start()
        else:
            self.response.read()
            self.closed.set()

    def run(self) -> None:
        try:
            while True:
                line = self.response.fp.readline()
                if not line:
                    break
                if line.startswith(b"data: ") and self.snapshot is None:
                    self.snapshot = json.loads(line[6:])
        except OSError:
            pass
        finally:
            self.closed.set()

    def close(self) -> None:
        """Hang up, as a closed browser tab does (the response holds the socket too: shut it down)."""
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.conn.close()


def audit(station) -> list[dict[str, Any]]:
    return [json.loads(line) for line in station.station.audit.path.read_text().splitlines()]


def test_hostile_requests_are_refused_and_only_a_real_message_reaches_the_or(station, broker, engines):
    eng = engines(broker, "or-1")
    case_id = eng.call("case.start", patient_id="P-HOSTILE", planned_sides=["L"])["case_id"]
    web = Web(station)
    assert web.login("anna.rossi", READERS["anna.rossi"][0])[0] == 303
    msg = "/api/or/or-1/message"
    # no CSRF token, a wrong one
    assert web.post_json(msg, {"text": "hi"}, csrf="")[0] == 403
    assert web.post_json(msg, {"text": "hi"}, csrf="forged")[0] == 403
    # what is not a message
    for bad in (b"not json", b"\xff\xfe", "[1, 2]", {"text": 5}, {"text": "   "}, {"text": "x" * 501},
                {"text": "release retraction", "kind": "alarm.ack"}, {"kind": "message"}):
        status, answer = web.post_json(msg, bad)
        assert status == 400 and "message" in answer["error"], (bad, status, answer)
    # a body larger than any request the station takes, a length that is not a number
    status, _h, _b = web.request("POST", msg, b"{}", {"Content-Length": str(10**9), "X-CSRF-Token": web.csrf})
    assert status == 400
    status, _h, _b = web.request("POST", msg, b"{}", {"Content-Length": "lots", "X-CSRF-Token": web.csrf})
    assert status == 400
    # paths that lead nowhere, an OR that is not hers, numbers out of range
    for path in ("/static/../server.py", "/static/%2e%2e/server.py", "/static/index.html", "/static/",
                 "/api/or/or-3/case", "/api/or/OR-1/case", "/api/or/or-1/case/../../x",
                 "/api/or/or-1/stimulus/1234567890123", "/api/or/or-1/stimulus/-1", "/api/or/" + "a" * 300 + "/case",
                 "/etc/passwd", "/api/or/or-3/message"):
        assert web.request("GET", path)[0] in (404, 405), path
    assert web.post_json("/api/or/or-3/message", {"text": "not your OR"})[0] == 404
    # forged, malformed or absent sessions
    for cookie in ("lnm_station=forged", "lnm_station=", "lnm_station=\"<script>\"; ;;==", "\x7f\x00"):
        assert web.request("GET", "/api/me", headers={"Cookie": cookie})[0] == 401
    # a login form that is not one
    assert web.request("POST", "/login", "a=1&b=2&c=3&d=4&e=5&f=6",
                       {"Content-Type": "application/x-www-form-urlencoded"})[0] == 400
    assert web.request("POST", "/login", b"username=" + b"x" * 20000)[0] == 400
    # the one real message: text for people, delivered as typed (markup is not interpreted anywhere)
    text = "<b>vagal 45 %</b> & <script>alert(1)</script>: release retraction"
    status, answer = web.post_json(msg, {"text": text, "kind": "interpretation"})
    assert status == 200 and answer["sent"], answer
    with Journal(eng.data / "journal.db", readonly=True) as j:
        assert wait_until(lambda: list(j.entries(case_id, kinds=["reader_message"], blobs=False)), 10)
        got = [e.payload for e in j.entries(case_id, kinds=["reader_message"], blobs=False)]
    assert len(got) == 1 and got[0]["text"] == text and got[0]["reader"] == "anna.rossi"
    # the station is still serving, the OR did nothing it was not asked by its nurse
    assert web.get_json("/api/me")[0] == 200
    st = eng.call("state.get")
    assert not st["stim"]["probe"]["on"] and not st["stim"]["aps"]["on"]
    assert not [a for a in st["alarms"]["active"] if a.get("acknowledged")]
    log = audit(station)
    assert sum(r["action"] == "denied" and r["detail"].get("reason") == "csrf" for r in log) >= 2
    assert any(r["action"] == "denied" and r["or"] == "or-3" for r in log)
    assert [r["detail"]["text"] for r in log if r["action"] == "message"] == [text]
    assert verify_audit_log(station.station.audit.path)[0]


def test_wrong_credentials_brute_force_and_a_broker_that_refuses_the_reader(station):
    st = station.station
    # a station user whose broker password was never set: the broker refuses, the person is told what to do
    carl = sc.User("carl.doe", "Dr Carl Doe", ("or-1",), hash_password("pw-carl-doe-333"))
    st.cfg.users["carl.doe"] = carl
    web = Web(station)
    status, page = web.login("carl.doe", "pw-carl-doe-333")
    assert status == 401 and "broker refused" in page and not web.cookie
    assert st.link("carl.doe") is None
    # an unknown user and a wrong password get the same words (no user names to fish for)
    s1, p1 = web.login("nobody.here", "whatever-password")
    s2, p2 = web.login("ben.kim", "not-his-password")
    assert s1 == s2 == 401 and "Wrong user name or password" in p1 and "Wrong user name or password" in p2
    assert web.request("GET", "/api/me")[0] == 401
    # guessing: after MAX_FAILURES the right password is refused too, for a while
    for _ in range(MAX_FAILURES):
        web.login("anna.rossi", "guess-" + str(time.monotonic()))
    status, page = web.login("anna.rossi", READERS["anna.rossi"][0])
    assert status == 401 and "Too many failed attempts" in page and not web.cookie
    log = audit(station)
    reasons = [(r["action"], r["detail"].get("reason")) for r in log]
    assert ("login_failed", "unknown user") in reasons and ("login_failed", "wrong password") in reasons
    assert any(a == "login_failed" and (why or "").startswith("broker refused") for a, why in reasons)
    assert reasons[-1][0] == "login_blocked" and not any(a == "login" for a, _w in reasons)
    assert verify_audit_log(st.audit.path)[0]


def test_a_flood_of_live_streams_is_bounded(station):
    st = station.station
    per_user = st.max_streams_per_user
    anna, ben = Web(station), Web(station)
    assert anna.login("anna.rossi", READERS["anna.rossi"][0])[0] == 303
    assert ben.login("ben.kim", READERS["ben.kim"][0])[0] == 303
    threads_before = threading.active_count()
    flood = [Stream(anna) for _ in range(30)]
    try:
        assert all(s.status == 200 for s in flood)
        # the reader keeps her newest streams; the older ones are closed by the station
        assert wait_until(lambda: sum(s.closed.is_set() for s in flood) == len(flood) - per_user, 15), \
            sum(s.closed.is_set() for s in flood)
        assert [s.closed.is_set() for s in flood[-per_user:]] == [False] * per_user
        assert st.streams() == per_user
        # the whole station has a bound too: beyond it a new stream is refused, in words
        st.max_streams = per_user + 1
        first = Stream(ben)
        assert first.status == 200 and wait_until(lambda: first.snapshot is not None, 10)
        assert set(first.snapshot["tiles"]) == {"or-3"}  # his ORs only
        refused = Stream(ben)
        assert refused.status == 503 and refused.closed.is_set()
        assert any(r["action"] == "denied" and r["detail"].get("reason") == "too many live streams"
                   for r in audit(station))
        # and the station still answers everything else
        assert anna.get_json("/api/me")[0] == 200 and ben.get_json("/api/me")[0] == 200
        first.close()
    finally:
        for s in flood:
            s.close()
    assert wait_until(lambda: st.streams() == 0, 10), st.streams()
    assert wait_until(lambda: threading.active_count() <= threads_before + 2, 10), \
        (threads_before, threading.active_count())


def test_three_cases_in_a_row_each_start_empty_at_the_station(station, broker, engines):
    eng = engines(broker, "or-1")
    web = Web(station)
    assert web.login("anna.rossi", READERS["anna.rossi"][0])[0] == 303
    eng.call("sim.control", command="aps_attach", args={"side": "L"})
    eng.call("stim.set", output="aps", rate_hz=10.0)
    previous: list[str] = []
    for n in (1, 2, 3):
        case_id = eng.call("case.start", patient_id=f"P-DAY-{n}", planned_sides=["L"])["case_id"]

        def view() -> dict[str, Any]:
            return web.get_json("/api/or/or-1/case")[1]

        assert wait_until(lambda: view()["case_id"] == case_id, 15)  # noqa: B023 - called at once
        # the new case at the station: nothing of the cases before it
        v = view()
        assert {e["case_id"] for e in v["events"]} <= {case_id}, v["events"]
        assert not v["measurements"] and not v["trend"]["L"]["index"]
        assert {e["case_id"] for e in v["emg"]} <= {case_id}  # the room's EMG since the case opened
        assert v["messages"] is None or not v["messages"]["messages"], v["messages"]
        # (the alarm list and the state are the appliance's: they may name the case closed last)
        case_part = json.dumps({k: v[k] for k in ("events", "measurements", "trend", "messages", "emg")})
        for old in previous:
            assert old not in case_part, old
        assert ((v["state"] or {}).get("case") or {}).get("case_id") in (None, case_id)
        snap = Stream(web)
        assert wait_until(lambda: snap.snapshot is not None, 10)  # noqa: B023
        tile = snap.snapshot["tiles"]["or-1"]
        snap.close()
        assert tile["case_id"] == case_id and not tile["waveforms"] and not tile["trend"]["L"]["index"]
        assert {e["case_id"] for e in tile["events"]} <= {case_id}
        # the case fills: stimuli, a note, a message from the reader
        eng.call("stim.output", output="aps", on=True)
        eng.call("note.add", text=f"note of case {n}")
        status, answer = web.post_json("/api/or/or-1/message", {"text": f"message in case {n}"})
        assert status == 200, answer

        def filled() -> bool:
            v = view()
            msgs = (v["messages"] or {}).get("messages") or []
            return (len(v["measurements"]) >= 5 and any(f"note of case {n}" in e["text"] for e in v["events"])  # noqa: B023
                    and [m["text"] for m in msgs] == [f"message in case {n}"])  # noqa: B023

        assert wait_until(filled, 20), view()["messages"]
        eng.call("stim.output", output="aps", on=False)
        eng.call("case.close")
        previous.append(case_id)
    # a reader who logs in now gets only the OR's current state: no case is open
    late = Web(station)
    assert late.login("anna.rossi", READERS["anna.rossi"][0])[0] == 303
    assert wait_until(lambda: late.get_json("/api/or/or-1/case")[1]["case_id"] is None, 15)
    assert not late.get_json("/api/or/or-1/case")[1]["measurements"]


def test_a_station_without_users_assigned_to_an_or_shows_it_to_nobody(station):
    """The OR list comes from the station's configuration: a reader's assignment can be
    taken away, and the next request already finds the OR gone."""
    st = station.station
    web = Web(station)
    assert web.login("anna.rossi", READERS["anna.rossi"][0])[0] == 303
    assert web.get_json("/api/or/or-2/case")[0] == 200
    st.cfg.users["anna.rossi"] = replace(st.cfg.users["anna.rossi"], ors=("or-1",))
    assert web.get_json("/api/or/or-2/case")[0] == 404
    assert web.post_json("/api/or/or-2/message", {"text": "hello"})[0] == 404
