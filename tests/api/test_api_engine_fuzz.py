"""Arbitrary request lines through the real socket into a real ``EngineService`` on the
virtual board: whatever arrives, the engine keeps monitoring, its API thread lives, and
a fresh client still gets ``state.get`` and the service console's ``lnm status``."""

from __future__ import annotations

import json
import socket
import threading

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.api import protocol as p
from app.api.client import EngineClient, EngineUnavailable
from waiting import wait_until

_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(-1e6, 1e6) | st.text(max_size=20)
    | st.sampled_from(["L", "R", "VAGUS", "RLN", "probe", "aps", "V1", "R1", "yes", "normal", "state", "events"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=15,
)


def _arguments(name):
    cmd = p.COMMANDS[name]
    keys = [a.name for a in cmd.args] + ["zz"]
    return st.dictionaries(st.sampled_from(keys), _values, max_size=len(keys))


# never stop the engine's board on purpose from the fuzzer: it would only test the sim
_COMMANDS = sorted(set(p.COMMANDS) - {"sim.control"})


def _valid(arg):
    """Values the command table accepts for ``arg`` (so that requests reach the engine)."""
    if arg.kind == "enum":
        return st.sampled_from(arg.choices)
    if arg.kind == "bool":
        return st.booleans()
    if arg.kind == "int":
        return st.integers(int(arg.minimum or 0), int(arg.maximum if arg.maximum is not None else 10**6))
    if arg.kind == "number":
        return st.floats(arg.minimum or 0.0, arg.maximum if arg.maximum is not None else 1e6)
    if arg.kind == "list":
        return st.lists(st.sampled_from(arg.choices), unique=True, max_size=arg.max_len)
    if arg.kind == "str" and arg.pattern:
        return st.from_regex(arg.pattern, fullmatch=True).filter(lambda v: len(v) <= arg.max_len)
    if arg.kind == "str":
        return st.text(max_size=min(arg.max_len, 40))
    from app.settings import SCHEMA

    return st.dictionaries(st.sampled_from(sorted(SCHEMA)), _values | st.floats(0, 1000) | st.integers(0, 1000),
                           min_size=1, max_size=3)


def _valid_request(name):
    cmd = p.COMMANDS[name]
    args = [a for a in cmd.args if a.name != "target"]  # export.usb writes where it is told: not into /
    required = {a.name: _valid(a) for a in args if a.required}
    optional = {a.name: _valid(a) for a in args if not a.required}
    return st.fixed_dictionaries(required, optional=optional).map(
        lambda values: json.dumps({"id": 1, "cmd": name, **values}).encode())

_lines = st.one_of(
    st.sampled_from(_COMMANDS).flatmap(_valid_request),
    st.sampled_from(_COMMANDS).flatmap(
        lambda name: _arguments(name).map(lambda args: json.dumps({"id": 1, "cmd": name, **args}).encode())),
    st.binary(max_size=200),
    st.builds(lambda n, o: (o * n).encode(), st.integers(1, 2000), st.sampled_from(["[", '{"a":', '{"id":['])),
    st.builds(lambda k, cmd: f'{{"id":{"7" * k},"cmd":"{cmd}"}}'.encode(), st.integers(1, 6000),
              st.sampled_from(_COMMANDS)),
    st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


def _ask(path, line: bytes) -> list[dict]:
    """Greet, send the line and a sentinel request; the messages up to the sentinel's answer.
    The sentinel goes through the engine's queue behind the line's request, so the line's
    reply (unless it is a documents job, which runs aside) comes before it."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(20)
    s.connect(str(path))
    f = s.makefile("rwb")
    try:
        assert json.loads(f.readline())["type"] == "hello"
        f.write(b'{"id":"g","cmd":"hello","client":"fuzz"}\n' + line.replace(b"\n", b" ") + b"\n"
                + b'{"id":"sentinel","cmd":"events.list","limit":1}\n')
        f.flush()
        got = []
        while True:
            raw = f.readline()
            assert raw, f"the engine closed the connection after {line[:120]!r}"
            m = json.loads(raw)
            got.append(m)
            if m.get("id") == "sentinel":
                assert m["ok"] and "events" in m["result"], m
                return got
    finally:
        f.close()
        s.close()


def test_fuzz_request_lines_into_a_live_engine(tmp_path):
    from app.engine.service import EngineConfig, EngineService
    from app.settings import Settings

    sock = tmp_path / "e.sock"
    cfg = EngineConfig(settings=Settings(), board_url="sim://?seed=21", socket_path=sock,
                       data_dir=tmp_path / "data", resume=False)
    svc = EngineService(cfg)
    result: dict = {}
    t = threading.Thread(target=lambda: result.setdefault("rc", svc.run()), daemon=True)
    t.start()
    try:
        assert wait_until(lambda: EngineClient(sock, timeout_s=2).connect() is not None, 20,
                          ignore=(EngineUnavailable,))
        codes: set[str] = set()

        @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(_lines)
        def check(line):
            for m in _ask(sock, line):
                if m.get("type") == "reply" and not m.get("ok"):
                    assert m["error"]["code"] in p.ERROR_CODES and m["error"]["message"]
                    assert m["error"]["code"] != p.INTERNAL, m  # a validated request never breaks the engine
                    codes.add(m["error"]["code"])
            assert t.is_alive() and svc.exit_code == 0 and svc.monitor.fatal is None
            assert svc.server.alive

        check()
        assert {p.BAD_JSON, p.BAD_REQUEST, p.INVALID_ARGUMENT, p.BAD_STATE} <= codes
        with EngineClient(sock, name="after", timeout_s=10) as c:
            st_ = c.call("state.get")
            assert st_["threads"]["healthy"] and st_["engine"]["fatal"] is None
        assert svc.server.counters["client_errors"] == 0 and svc.server.counters["thread_errors"] == 0
    finally:
        svc.stop()
        t.join(30)
    assert result.get("rc") == 0
