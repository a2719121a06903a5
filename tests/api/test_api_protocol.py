"""The API's command table, request validation and framing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.api import protocol as p

API_MD = Path(p.__file__).with_name("API.md").read_text()


def test_every_command_is_documented_with_its_arguments():
    for cmd in p.COMMAND_LIST:
        heading = re.search(rf"^#### `{re.escape(cmd.name)}`", API_MD, re.M)
        assert heading, f"{cmd.name} is not documented in API.md"
        section = API_MD[heading.end():].split("\n#### ", 1)[0]
        for arg in cmd.args:
            assert f"`{arg.name}`" in section, f"{cmd.name}: argument {arg.name} not documented"


def test_every_error_code_is_documented():
    for code in p.ERROR_CODES:
        assert f"`{code}`" in API_MD


def test_valid_request_is_parsed_and_converted():
    rid, cmd, args = p.parse_request({"id": 4, "cmd": "stim.set", "output": "probe", "current_mA": 2,
                                      "pulse_width_us": 100.0})
    assert rid == 4 and cmd.name == "stim.set"
    assert args == {"output": "probe", "current_mA": 2.0, "pulse_width_us": 100}
    assert isinstance(args["pulse_width_us"], int)


@pytest.mark.parametrize(
    "request_, code, words",
    [
        ({"cmd": "frobnicate"}, p.UNKNOWN_COMMAND, ["frobnicate"]),
        ({"cmd": "alarm.frob"}, p.UNKNOWN_COMMAND, ["alarm.ack"]),
        ({"id": 1}, p.BAD_REQUEST, ["cmd"]),
        ({"id": [1], "cmd": "ping"}, p.BAD_REQUEST, ["id"]),
        ({"cmd": "stim.set", "output": "probe", "current_mA": 11}, p.INVALID_ARGUMENT, ["current_mA", "mA", "0-10"]),
        ({"cmd": "stim.set", "output": "probe", "current_mA": "2"}, p.INVALID_ARGUMENT, ["current_mA", "not a number"]),
        ({"cmd": "stim.set", "output": "probe", "current_mA": True}, p.INVALID_ARGUMENT, ["current_mA"]),
        ({"cmd": "stim.set", "output": "laser"}, p.INVALID_ARGUMENT, ["output", "probe, aps"]),
        ({"cmd": "stim.set"}, p.INVALID_ARGUMENT, ["output", "required"]),
        ({"cmd": "stim.set", "output": "probe", "volts": 3}, p.INVALID_ARGUMENT, ["volts", "allowed"]),
        ({"cmd": "stim.set", "output": "probe", "pulse_width_us": 100.5}, p.INVALID_ARGUMENT, ["integer"]),
        ({"cmd": "case.start", "patient_id": "a b; drop"}, p.INVALID_ARGUMENT, ["patient_id"]),
        ({"cmd": "case.start", "patient_id": "P1", "planned_sides": ["L", "L"]}, p.INVALID_ARGUMENT, ["repeats"]),
        ({"cmd": "case.start", "patient_id": "P1", "planned_sides": ["X"]}, p.INVALID_ARGUMENT, ["planned_sides"]),
        ({"cmd": "note.add", "text": "x" * 2001}, p.INVALID_ARGUMENT, ["2001 characters"]),
        ({"cmd": "settings.set", "changes": [1]}, p.INVALID_ARGUMENT, ["JSON object"]),
        ({"cmd": "subscribe", "streams": ["state", "gossip"]}, p.INVALID_ARGUMENT, ["gossip"]),
    ],
)
def test_nonsense_is_refused_with_a_clear_message(request_, code, words):
    with pytest.raises(p.ApiError) as info:
        p.parse_request(request_)
    assert info.value.code == code
    for w in words:
        assert w in info.value.message


def test_decode_line_refuses_non_objects():
    for line in (b"not json", b"[1,2]", b"\xff\xfe", b'"text"'):
        with pytest.raises(p.ApiError) as info:
            p.decode_line(line)
        assert info.value.code == p.BAD_JSON


def test_encode_is_one_line_without_nan():
    data = p.encode({"a": float("nan"), "b": [1.5, float("inf")], "c": "x\ny"})
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert json.loads(data) == {"a": None, "b": [1.5, None], "c": "x\ny"}


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@given(
    st.sampled_from([c.name for c in p.COMMAND_LIST] + ["", "x", "case"]),
    st.dictionaries(st.sampled_from(["output", "current_mA", "side", "site", "step", "text", "changes", "on", "zz",
                                     "id"]), _json, max_size=5),
)
def test_random_requests_either_parse_or_raise_api_error(name, extra):
    request = {"cmd": name, **extra}
    try:
        _rid, cmd, args = p.parse_request(request)
    except p.ApiError as err:
        assert err.code in p.ERROR_CODES and err.message
        return
    for a in cmd.args:
        if a.required:
            assert a.name in args
    assert set(args) <= {a.name for a in cmd.args}


def test_default_socket_path_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LNM_SOCKET", str(tmp_path / "x.sock"))
    assert p.default_socket_path() == tmp_path / "x.sock"


def test_a_request_expires_half_a_second_before_its_reply_deadline():
    from app.api.protocol import EXPIRED, EXPIRY_MARGIN_S, ERROR_CODES, Request

    r = Request(1, "stim.output", {"output": "aps", "on": False}, client="ui#1", deadline_s=100.0)
    assert not r.expired(100.0 - EXPIRY_MARGIN_S - 0.01)
    assert r.expired(100.0 - EXPIRY_MARGIN_S) and r.expired(250.0)
    assert not Request(2, "ping").expired(1e12)  # no deadline: never expires
    assert EXPIRED in ERROR_CODES
