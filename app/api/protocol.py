"""The local API's wire format and command table (pure: no sockets, no threads).

Owns: framing (one JSON object per line, UTF-8), the command table (every command with
its arguments, their units and ranges), request validation with clear errors, the
error codes, and the default socket path. ``API.md`` documents the same table for
people; a test checks that every command here is documented there.
May import: the standard library, ``app.model`` (sites, sides, steps) and
``firmware_bridge.fields`` (the field specification behind ``Arg``).

A request is ``{"id": N, "cmd": "NAME", ...arguments}``; the reply is
``{"type": "reply", "id": N, "ok": true, "result": {...}}`` or
``{"type": "reply", "id": N, "ok": false, "error": {"code": CODE, "message": TEXT, ...}}``.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Mapping

from app.api import API_VERSION
from app.model import NERVES, SIDES, SITES, STEPS
from firmware_bridge.fields import Field, FieldError

MAX_LINE_BYTES = 64 * 1024  # a request line longer than this is refused (client dropped)
MAX_DEPTH = 16  # arrays and objects nested deeper than this are refused (no command needs more than 3)
MAX_NUMBER_CHARS = 32  # a JSON number written with more characters than this is refused
MAX_ID_CHARS = 64  # a string id longer than this is refused
MAX_ID = 2**53  # an integer id must lie within +-MAX_ID (exact in every JSON implementation)
ROLES = ("ui", "console")  # roles with reserved connection places (``hello``'s ``role``)

# --------------------------------------------------------------------------- error codes

BAD_JSON = "bad_json"  # the line is not a JSON object
BAD_REQUEST = "bad_request"  # no "cmd", or "id" is not an integer
UNKNOWN_COMMAND = "unknown_command"
INVALID_ARGUMENT = "invalid_argument"  # missing, unknown, wrong type or out of range
SETTING_REJECTED = "setting_rejected"  # a settings change failed the schema
NEEDS_CONFIRMATION = "needs_confirmation"  # a current above stim.confirm_above_mA, a protected limit relaxed
BAD_STATE = "bad_state"  # not possible now (no open case, tube check failed, ...)
NOT_SIMULATED = "not_simulated"  # virtual-board control on a real board
BOARD_UNAVAILABLE = "board_unavailable"  # the board link is down
TIMEOUT = "timeout"  # the engine did not answer in time
EXPIRED = "expired"  # the engine reached the command too late to run it (its client was told "timeout")
INTERNAL = "internal"  # an unexpected engine error (it is journaled)

ERROR_CODES = (
    BAD_JSON, BAD_REQUEST, UNKNOWN_COMMAND, INVALID_ARGUMENT, SETTING_REJECTED,
    NEEDS_CONFIRMATION, BAD_STATE, NOT_SIMULATED, BOARD_UNAVAILABLE, TIMEOUT, EXPIRED, INTERNAL,
)

# A command the engine reaches less than this long before its reply deadline is not run:
# its client will hear "timeout" and must be able to trust that nothing happened.
EXPIRY_MARGIN_S = 0.5


class ApiError(Exception):
    """A request was refused. ``code`` is one of ``ERROR_CODES``; extra fields go to the reply."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.details}


# --------------------------------------------------------------------------- framing


def encode(obj: Mapping[str, Any]) -> bytes:
    """One message as one line (compact JSON, no NaN: they become null)."""
    return (json.dumps(_finite(obj), separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


class _Refused(ValueError):
    """Raised from inside ``json.loads`` (a number or constant hook) to stop at once."""


def _number(text: str) -> None:
    if len(text) > MAX_NUMBER_CHARS:
        raise _Refused(f"a number in the request is {len(text)} characters long; "
                       f"at most {MAX_NUMBER_CHARS} are accepted")


def _parse_int(text: str) -> int:
    _number(text)
    return int(text)


def _parse_float(text: str) -> float:
    _number(text)
    return float(text)


def _parse_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a number JSON allows (unknown values are null)")


# A JSON string (escapes included) or one bracket: strings are skipped whole, so that a
# bracket inside a text does not count as nesting. Linear: no nested repetition.
_DEPTH_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[{\]}]')


def nesting_depth(text: str, limit: int = MAX_DEPTH) -> int:
    """How deep arrays and objects nest in ``text``, counted up to ``limit + 1`` (then it
    stops: a line of a million ``[`` costs no more than ``limit`` of them)."""
    depth = deepest = 0
    for m in _DEPTH_TOKENS.finditer(text):
        tok = m.group()
        if tok in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        elif tok in "]}":
            depth = max(0, depth - 1)
    return deepest


def decode_line(line: bytes | str) -> dict[str, Any]:
    """Parse one request line within limits; raises ApiError, never anything else.

    ``bad_json``: not UTF-8, not JSON, or not a JSON object. ``bad_request``: longer than
    ``MAX_LINE_BYTES``, nested deeper than ``MAX_DEPTH``, a number longer than
    ``MAX_NUMBER_CHARS`` characters, NaN or Infinity.
    """
    if len(line) > MAX_LINE_BYTES:
        raise ApiError(BAD_REQUEST, f"request line is {len(line)} bytes long; at most {MAX_LINE_BYTES} are accepted")
    if isinstance(line, bytes):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ApiError(BAD_JSON, f"request is not UTF-8 text (byte 0x{line[exc.start]:02x} at position "
                                     f"{exc.start})") from None
    else:
        text = line
    if nesting_depth(text) > MAX_DEPTH:
        raise ApiError(BAD_REQUEST, f"request nests arrays or objects more than {MAX_DEPTH} levels deep")
    try:
        obj = json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
    except _Refused as exc:
        raise ApiError(BAD_REQUEST, str(exc)) from None
    except json.JSONDecodeError as exc:
        raise ApiError(BAD_JSON, f"request is not valid JSON ({exc})") from None
    except RecursionError:  # the depth check above should make this unreachable
        raise ApiError(BAD_REQUEST, f"request nests arrays or objects more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:  # e.g. Python's limit on the digits of an integer
        raise ApiError(BAD_REQUEST, f"request has a value that cannot be read ({str(exc)[:120]})") from None
    if not isinstance(obj, dict):
        raise ApiError(BAD_JSON, "request must be a JSON object like {\"id\": 1, \"cmd\": \"ping\"}")
    return obj


def request_id(obj: Mapping[str, Any]) -> Any:
    """The request's id if it is a valid one (echoed in the reply), else None."""
    rid = obj.get("id")
    if isinstance(rid, bool):
        return None
    if isinstance(rid, int) and -MAX_ID <= rid <= MAX_ID:
        return rid
    if isinstance(rid, str) and len(rid) <= MAX_ID_CHARS:
        return rid
    return None


def _short(value: Any, limit: int = 60) -> str:
    """``repr`` of a value cut to ``limit`` characters (for messages about long nonsense)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def reply_ok(req_id: Any, result: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A successful reply to request ``req_id``."""
    return {"type": "reply", "id": req_id, "ok": True, "result": dict(result or {})}


def reply_error(req_id: Any, error: ApiError) -> dict[str, Any]:
    """A refusal of request ``req_id``."""
    return {"type": "reply", "id": req_id, "ok": False, "error": error.to_json()}


def hello(engine_version: str, **extra: Any) -> dict[str, Any]:
    """The engine's greeting, sent on every new connection."""
    return {"type": "hello", "api": API_VERSION, "engine": engine_version, **extra}


# --------------------------------------------------------------------------- socket path


def default_socket_path() -> Path:
    """Where the engine listens unless told otherwise (``lnm engine --socket``).

    ``$LNM_SOCKET`` if set; ``/run/lnm/engine.sock`` when ``/run/lnm`` exists (the
    appliance); otherwise ``<tmp>/lnm-<uid>/engine.sock`` (development machines).
    """
    env = os.environ.get("LNM_SOCKET")
    if env:
        return Path(env)
    if os.path.isdir("/run/lnm"):
        return Path("/run/lnm/engine.sock")
    return Path(tempfile.gettempdir()) / f"lnm-{os.getuid()}" / "engine.sock"


# --------------------------------------------------------------------------- command table

OUTPUTS = ("probe", "aps")
STREAMS = ("state", "events", "measurements", "waveforms", "emg", "alarms")
FINDINGS = ("normal", "paresis", "palsy", "not_examined")  # app.rules.procedure.Finding
TS_CHECKS = (  # app.rules.procedure.Check, in INMSG order
    "current_delivered",  # is the current delivered as set (measured vs set)?
    "leads_ok",  # probe, return and ground leads connected?
    "field_dry",  # is the field dry (fluid shunts current)?
    "laryngeal_twitch",  # laryngeal twitch palpable on stimulation?
    "contralateral_vagus",  # does the contralateral vagus respond?
    "tube_position_ok",  # tube depth and rotation correct?
    "secretions_ok",  # electrodes free of saliva?
    "nmb_ok",  # train-of-four normal (no neuromuscular blockade)?
    "nonrecurrent",  # non-recurrent nerve suspected (right side)?
)
STAGING_DECISIONS = ("postpone_second_side", "proceed_second_side")


@dataclass(frozen=True)
class Arg:
    """One argument of a command: its kind, unit, range or choices, and a note for people."""

    name: str
    kind: str  # number, int, bool, str, enum, list, object
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    required: bool = False
    max_len: int = 200  # str: characters; list: items
    pattern: str | None = None
    doc: str = ""

    @property
    def field(self) -> Field:
        """The argument as a field specification (JSON values: an integral number is an int)."""
        return Field(self.name, self.kind, self.unit, self.minimum, self.maximum, self.choices, self.pattern,
                     self.max_len, accept="json")

    def describe(self) -> str:
        """What the argument must be: ``a number 0-10 mA``, ``one of probe, aps``, ..."""
        return self.field.describe()

    def check(self, cmd: str, value: Any) -> Any:
        """The value converted to the argument's kind, or ApiError(invalid_argument) naming
        the command, the argument, its unit and what it must be."""
        try:
            return self.field.check(value)
        except FieldError as exc:
            raise self._bad(cmd, exc.phrase) from None

    def _bad(self, cmd: str, problem: str) -> ApiError:
        unit = f" ({self.unit})" if self.unit else ""
        return ApiError(
            INVALID_ARGUMENT,
            f"{cmd}: argument {self.name}{unit} {problem}; must be {self.describe()}",
            argument=self.name,
        )


@dataclass(frozen=True)
class Command:
    """One command of the API with its arguments (the table ``API.md`` mirrors)."""

    name: str
    doc: str
    args: tuple[Arg, ...] = ()
    needs_case: bool = False  # refused with bad_state when no case is open
    simulation_only: bool = False

    def arg(self, name: str) -> Arg | None:
        for a in self.args:
            if a.name == name:
                return a
        return None


def _a(name: str, kind: str, unit: str = "", lo: float | None = None, hi: float | None = None, **kw: Any) -> Arg:
    return Arg(name, kind, unit, lo, hi, **kw)


_ID = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}"
# anaesthesia for the INMSG record (case.start / case.update)
_ANAESTHESIA = (
    _a("relaxant", "str", max_len=80, doc="neuromuscular blocker and dose at induction, or none"),
    _a("relaxant_time", "str", pattern=r"([01][0-9]|2[0-3]):[0-5][0-9]", max_len=5, doc="when it was given (HH:MM)"),
    _a("tof_count", "int", "", 0, 4, doc="train-of-four count when monitoring started"),
    _a("tof_ratio_pct", "number", "%", 0.0, 150.0, doc="train-of-four ratio when monitoring started"),
)

COMMAND_LIST: list[Command] = [
    # connection
    Command("hello", "name this connection (required before any command but ping); its commands are journaled "
                     "with the name", (
        _a("client", "str", required=True, pattern=r"[A-Za-z0-9_.:-]{1,40}", max_len=40, doc="e.g. ui, lnm-ack"),
        _a("role", "enum", choices=ROLES, doc="ui (the touchscreen) or console (lnm status/ack/events): "
                                              "a reserved connection place"),
    )),
    Command("ping", "check that the engine answers"),
    Command("subscribe", "start (or change) this connection's subscription stream", (
        _a("streams", "list", choices=STREAMS, max_len=len(STREAMS), doc="streams wanted (default: all)"),
        _a("state_hz", "number", "Hz", 0.2, 10.0, doc="state snapshot rate (default 4 Hz)"),
    )),
    Command("unsubscribe", "stop this connection's subscription stream"),
    Command("state.get", "the complete current state snapshot"),
    Command("events.list", "recent events, oldest first", (
        _a("since_seq", "int", "", 0, None, doc="only events with a larger seq"),
        _a("limit", "int", "events", 1, 1000, doc="at most this many (the newest; default 100)"),
    )),
    Command("trend.get", "amplitude/latency trend of the case (continuous vagal and probe responses)", (
        _a("side", "enum", choices=SIDES, doc="one side only (default both)"),
        _a("max_points", "int", "points", 10, 5000, doc="decimate to at most this many (default 1000)"),
    )),
    # case
    Command("case.start", "open a new case (the journal starts recording)", (
        _a("patient_id", "str", required=True, pattern=_ID, max_len=32, doc="pseudonymous patient id"),
        _a("surgeon", "str", max_len=64),
        _a("profile", "str", pattern=r"[A-Za-z0-9_-]{1,40}", max_len=40,
           doc="surgeon profile (config/profiles/NAME.toml)"),
        _a("procedure", "str", max_len=120, doc="e.g. total thyroidectomy"),
        _a("planned_sides", "list", choices=SIDES, max_len=2, doc="sides to be operated, in order"),
        _a("tube_type", "str", max_len=64),
        _a("tube_size_mm", "number", "mm", 5.0, 10.0, doc="inner diameter"),
        _a("tube_depth_cm", "number", "cm", 10.0, 30.0, doc="depth at the teeth"),
        *_ANAESTHESIA,
    )),
    Command("case.update", "change case data of the open case (same arguments as case.start, all optional)", (
        _a("surgeon", "str", max_len=64),
        _a("procedure", "str", max_len=120),
        _a("planned_sides", "list", choices=SIDES, max_len=2),
        _a("tube_type", "str", max_len=64),
        _a("tube_size_mm", "number", "mm", 5.0, 10.0),
        _a("tube_depth_cm", "number", "cm", 10.0, 30.0),
        *_ANAESTHESIA,
    ), needs_case=True),
    Command("case.close", "stop stimulation and close the open case", (
        _a("note", "str", max_len=2000, doc="closing remark, journaled"),
        _a("reasons", "object", doc='why each missing INMSG step was not done: {"L": {"V2": "reason" or "not done"}}'),
    ), needs_case=True),
    # stimulation
    Command("stim.set", "set stimulation parameters of one output", (
        _a("output", "enum", choices=OUTPUTS, required=True),
        _a("current_mA", "number", "mA", 0.0, 10.0, doc="set current; above stim.confirm_above_mA needs confirm=true"),
        _a("rate_hz", "number", "Hz", 0.5, 30.0, doc="pulse rate while the output is on"),
        _a("pulse_width_us", "int", "us", 50, 250),
        _a("confirm", "bool", doc="confirms a current above stim.confirm_above_mA"),
    )),
    Command("stim.output", "switch an output's stimulation on or off", (
        _a("output", "enum", choices=OUTPUTS, required=True),
        _a("on", "bool", required=True),
    ), needs_case=True),
    Command("stim.single", "deliver one probe pulse now", needs_case=True),
    Command("probe.site", "what the probe is on now (tags every probe stimulus)", (
        _a("site", "enum", choices=SITES, required=True),
        _a("side", "enum", choices=SIDES, required=True),
        _a("step", "enum", choices=STEPS + ("none",), doc="INMSG step the following probe stimuli belong to"),
    )),
    Command("aps.side", "the side of the continuous vagal electrode", (
        _a("side", "enum", choices=SIDES, required=True),
    )),
    # procedure
    Command("step.tag", "record an INMSG step from a response", (
        _a("step", "enum", choices=STEPS, required=True),
        _a("side", "enum", choices=SIDES, doc="default: the probe's current side"),
        _a("which", "enum", choices=("last", "next", "offer"),
           doc="last response (default), the next valid one, or the stimulus the loss-of-signal "
               "troubleshooting offers (R2 / V2 given after the loss)"),
    ), needs_case=True),
    Command("step.clear", "forget the recorded value of a step", (
        _a("step", "enum", choices=STEPS, required=True),
        _a("side", "enum", choices=SIDES, required=True),
    ), needs_case=True),
    Command("laryngoscopy", "L1 (before) or L2 (after) vocal-fold finding, entered by hand", (
        _a("phase", "enum", choices=("L1", "L2"), required=True),
        _a("side", "enum", choices=SIDES, required=True),
        _a("finding", "enum", choices=FINDINGS, required=True),
        _a("note", "str", max_len=500),
    ), needs_case=True),
    Command("baseline.capture", "take the last valid response of a site as its baseline", (
        _a("site", "enum", choices=NERVES, required=True),
        _a("side", "enum", choices=SIDES, required=True),
    ), needs_case=True),
    Command("baseline.rebaseline", "start a new continuous vagal baseline on a side", (
        _a("side", "enum", choices=SIDES, required=True),
    ), needs_case=True),
    Command("ts.answer", "an answer in the loss-of-signal troubleshooting sequence", (
        _a("side", "enum", choices=SIDES, required=True),
        _a("check", "enum", choices=TS_CHECKS, required=True),
        _a("answer", "enum", choices=("yes", "no"), required=True, doc="yes = this is fine / present"),
        _a("note", "str", max_len=500),
    ), needs_case=True),
    Command("ts.verdict", "the surgeon's own verdict on a side's loss of signal", (
        _a("side", "enum", choices=SIDES, required=True),
        _a("verdict", "enum", choices=("true_los", "not_true_los"), required=True),
        _a("reason", "str", required=True, max_len=500),
    ), needs_case=True),
    Command("mapping.result", "a point of RLN mapping after a loss of signal", (
        _a("side", "enum", choices=SIDES, required=True),
        _a("position_mm", "number", "mm", 0.0, 150.0, required=True,
           doc="distance from the laryngeal entry (0 = most distal)"),
        _a("response", "bool", required=True),
        _a("amplitude_uV", "number", "uV", 0.0, 100000.0),
        _a("label", "str", max_len=80),
    ), needs_case=True),
    Command("mapping.clear", "forget a side's mapping points", (
        _a("side", "enum", choices=SIDES, required=True),
    ), needs_case=True),
    Command("staging.decision", "the surgeon's decision after a staging recommendation", (
        _a("decision", "enum", choices=STAGING_DECISIONS, required=True),
        _a("reason", "str", required=True, max_len=500),
    ), needs_case=True),
    Command("note.add", "a free-text note in the case record", (
        _a("text", "str", required=True, max_len=2000),
    ), needs_case=True),
    Command("snapshot", "keep the current traces and values in the record", (
        _a("comment", "str", max_len=500),
    ), needs_case=True),
    Command("tube.check", "measure the electrode impedances now (result in the state and as an event)"),
    Command("tube.override", "accept a failed tube check explicitly (recorded)", (
        _a("reason", "str", required=True, max_len=500),
    ), needs_case=True),
    # alarms
    Command("alarm.ack", "acknowledge an alarm (default: the top one)", (
        _a("alarm", "str", max_len=80, doc="alarm id from the alarm list"),
    )),
    Command("alarm.pause_audio", "pause alarm sound for alarms.audio_pause_s"),
    Command("alarm.reset", "reset latched alarms whose condition has ended", (
        _a("alarm", "str", max_len=80),
    )),
    Command("alarm.audio_off", "switch alarm audio off indefinitely (or back on); reminded periodically", (
        _a("off", "bool", required=True),
    )),
    # documentation
    Command("report.get", "the case documentation (JSON content, and a PDF written in the data folder)", (
        _a("case_id", "str", pattern=r"[A-Za-z0-9_.:-]{1,80}", max_len=80,
           doc="default: the open case, else the last closed one"),
        _a("pdf", "bool", doc="also write the PDF (default true)"),
    )),
    Command("export.usb", "write report, JSON and EDF+ of a case to a USB stick and verify them", (
        _a("case_id", "str", pattern=r"[A-Za-z0-9_.:-]{1,80}", max_len=80,
           doc="default: the open case, else the last closed one"),
        _a("target", "str", max_len=400, doc="mount point (default: the one stick found mounted)"),
        _a("pseudonymise", "bool", doc="default true"),
    )),
    Command("cases.list", "cases in the journal, newest first", (
        _a("limit", "int", "cases", 1, 500, doc="default 50"),
    )),
    # self-test
    Command("selftest.run", "check board, audio, LEDs/buzzer and storage; returns one result per item"),
    Command("selftest.confirm", "the nurse's answer for a played self-test output: seen / heard, or not", (
        _a("item", "enum", choices=("audio", "leds", "buzzer"), required=True,
           doc="the self-test item waiting for the nurse"),
        _a("seen", "bool", required=True, doc="true: seen / heard as asked; false: not"),
        _a("note", "str", max_len=200),
    )),
    # settings
    Command("settings.get", "every setting with its value, unit, range and description"),
    Command("settings.set", "change settings (validated against the schema, journaled)", (
        _a("changes", "object", required=True, doc='{"group.name": value, ...}'),
        _a("confirm", "bool", doc="confirms relaxing a protected limit (the event threshold, an alarm limit) "
                                  "beyond its default, or changing one while a related alarm is active"),
    )),
    # simulation
    Command("sim.control", "control the virtual board (probe contact, traction, cautery, ...)", (
        _a("command", "str", required=True, max_len=64),
        _a("args", "object", doc="arguments of the virtual-board command"),
    ), simulation_only=True),
]

COMMANDS: dict[str, Command] = {c.name: c for c in COMMAND_LIST}


def parse_request(obj: Mapping[str, Any]) -> tuple[Any, Command, dict[str, Any]]:
    """Validate a request: ``(id, command, arguments)`` or ApiError naming the problem."""
    req_id = obj.get("id")
    if req_id is not None and request_id(obj) is None:
        raise ApiError(BAD_REQUEST, f"\"id\" must be an integer (at most {MAX_ID} in size) or a string of at most "
                                    f"{MAX_ID_CHARS} characters")
    name = obj.get("cmd")
    if not isinstance(name, str):
        raise ApiError(BAD_REQUEST, "request has no \"cmd\" (e.g. {\"id\": 1, \"cmd\": \"ping\"})")
    cmd = COMMANDS.get(name)
    if cmd is None:
        close = [c for c in COMMANDS if c.split(".")[0] == name.split(".")[0]] or sorted(COMMANDS)
        raise ApiError(UNKNOWN_COMMAND, f"unknown command {_short(name)}; known: {', '.join(close)}")
    args: dict[str, Any] = {}
    for key, value in obj.items():
        if key in ("id", "cmd"):
            continue
        spec = cmd.arg(key)
        if spec is None:
            allowed = ", ".join(a.name for a in cmd.args) or "none"
            raise ApiError(
                INVALID_ARGUMENT, f"{name}: unknown argument {_short(key)}; allowed: {allowed}", argument=key[:60]
            )
        args[key] = spec.check(name, value)
    for spec in cmd.args:
        if spec.required and spec.name not in args:
            raise ApiError(
                INVALID_ARGUMENT,
                f"{name}: argument {spec.name} is required; must be {spec.describe()}",
                argument=spec.name,
            )
    return req_id, cmd, args


@dataclass
class Request:
    """A validated request travelling from a connection to the engine."""

    id: Any
    cmd: str
    args: dict[str, Any] = field(default_factory=dict)
    client: str = ""
    deadline_s: float | None = None  # time.monotonic() by which the client must have its reply

    def expired(self, now_s: float) -> bool:
        """True when it is too late to run the command (see ``EXPIRY_MARGIN_S``)."""
        return self.deadline_s is not None and now_s >= self.deadline_s - EXPIRY_MARGIN_S
