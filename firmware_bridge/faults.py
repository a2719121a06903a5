"""Link faults on command: the pure core of ``lnm link-proxy``.

Owns: ``FaultPlan`` (the rules, what each frame becomes, the frames held back, the
history for replays, the counters) and the command language shared by the proxy's
``--fault`` options and its control channel.
May import: the standard library, numpy, ``firmware_bridge.codec`` and ``.messages``.

Pure: no I/O, threads or clock; the caller passes ``now`` (seconds). Not thread-safe:
the proxy serialises access.

Two directions: ``board`` (frames from the board, towards the engine) and ``host``
(frames from the engine, towards the board). ``process(direction, data, now)`` splits
the byte stream into frames with the real codec (bytes that are not a good frame pass
through unchanged), applies the rules that match each frame's type and returns the bytes
to forward now; ``release(now)`` returns what a ``delay`` or ``reorder`` held back and
is now due. ``command(line, now)`` changes the plan; its answer is one line, and it may
return bytes to send at once (``replay``, ``inject``, ``header``, ``garbage``).

Commands (TYPE is a message class name such as ``StimEpoch``, ``EmgBlock``,
``BoardHeartbeat``, ``BoardStatus``, ``Ack``, ``HostHeartbeat``, ``Stimulate``, or
``*`` for every frame; options ``count=N`` (apply N times, then the rule ends),
``p=P`` (probability), ``every=N`` (every Nth matching frame))::

    drop TYPE [count=N] [p=P] [every=N]        lose the frame
    delay TYPE MS [...]                        hold it MS milliseconds (others pass)
    duplicate TYPE [...]                       send it twice
    reorder TYPE [...]                         send it after the next frame
    corrupt TYPE [...]                         damage its CRC-32 (a noisy line)
    mutate TYPE FIELD=VALUE... [...]           change fields, CRCs kept valid
    replay TYPE [n=N]                          send the last N frames of TYPE again, now
    inject TYPE FIELD=VALUE... [seq=N]         send a made-up frame, now
    header TYPE LENGTH [seq=N]                 send a lone header announcing LENGTH bytes
    garbage N [to=engine|board]                send N random bytes
    renumber on|off [dir=board|host]           number forwarded frames consecutively
    clear [TYPE|all]                           remove rules
    rules                                      list the rules
    stats                                      counters as one JSON line
    help

FIELD values: integers (``0x`` hex too), ``none``, ``true``/``false``, enum names
(``output=APS``), text; for StimEpoch/EmgBlock ``n=N`` and ``channels=C`` reshape the
samples. A template for ``inject`` is the last frame of that type seen, else a default.
"""

from __future__ import annotations

import binascii
import dataclasses
import json
import random
import shlex
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from firmware_bridge import codec
from firmware_bridge import messages as M
from firmware_bridge.codec import HEADER_SIZE, Frame, decode_at, encode, max_payload

DIRECTIONS = ("board", "host")
RULE_ACTIONS = ("drop", "delay", "duplicate", "reorder", "corrupt", "mutate")
REORDER_MAX_S = 1.0  # a frame held for reordering goes out after this even if nothing follows
HISTORY = 64  # frames kept per type for replay

_CLASSES: dict[str, type] = {cls.__name__: cls for cls in codec.MESSAGE_TYPES}
_DEFAULTS: dict[str, Any] = {
    "Hello": lambda: M.Hello(),
    "ConfigureAcquisition": lambda: M.ConfigureAcquisition(),
    "Stimulate": lambda: M.Stimulate(M.Output.PROBE, M.StimMode.STOP),
    "ImpedanceRequest": lambda: M.ImpedanceRequest(),
    "HostHeartbeat": lambda: M.HostHeartbeat(),
    "SimControl": lambda: M.SimControl("noop"),
    "Capabilities": lambda: M.Capabilities(M.PROTOCOL_VERSION, "injected", "INJECTED"),
    "StimEpoch": lambda: M.StimEpoch(0, 0, M.Output.APS, 1000, 1000, 100, 20000, 200, 100,
                                     np.zeros((2, 1200), np.int32)),
    "EmgBlock": lambda: M.EmgBlock(0, 0, 20000, 100, np.zeros((2, 400), np.int32)),
    "ImpedanceResult": lambda: M.ImpedanceResult(0, ()),
    "BoardStatus": lambda: M.BoardStatus(0, M.Fault.NONE),
    "BoardHeartbeat": lambda: M.BoardHeartbeat(0, 0),
    "Ack": lambda: M.Ack(0),
    "Nack": lambda: M.Nack(0, M.NackReason.MALFORMED),
}
_ENUMS = {"output": M.Output, "mode": M.StimMode, "reason": M.NackReason, "faults": M.Fault}


class FaultSyntaxError(ValueError):
    """A fault command that cannot be understood; the message says what is wrong."""


def direction_of_type(name: str) -> str:
    """``board`` for a board message type (towards the engine), ``host`` otherwise."""
    return "board" if codec.direction_of(codec.MESSAGE_TYPES[_CLASSES[name]]) == "board" else "host"


@dataclass
class Rule:
    """One standing fault: what to do to frames of one type."""

    action: str
    type_name: str  # a message class name or "*"
    count: int | None = None
    p: float = 1.0
    every: int = 1
    delay_s: float = 0.0
    fields: dict[str, str] = field(default_factory=dict)
    seen: int = 0
    applied: int = 0

    def matches(self, type_name: str) -> bool:
        return self.type_name in ("*", type_name)

    def fires(self, rng: random.Random) -> bool:
        self.seen += 1
        if self.every > 1 and self.seen % self.every:
            return False
        return self.p >= 1.0 or rng.random() < self.p

    def describe(self) -> str:
        parts = [self.action, self.type_name]
        if self.action == "delay":
            parts.append(f"{self.delay_s * 1000:g}")
        parts += [f"{k}={v}" for k, v in self.fields.items()]
        if self.count is not None:
            parts.append(f"count={self.count}")
        if self.p < 1.0:
            parts.append(f"p={self.p:g}")
        if self.every > 1:
            parts.append(f"every={self.every}")
        return " ".join(parts) + f" (applied {self.applied})"


@dataclass
class _Held:
    due: float
    order: int
    direction: str
    raw: bytes
    after_next: bool = False


class FaultPlan:
    """The proxy's fault rules and what they do to each frame (see the module docstring)."""

    def __init__(self, seed: int = 0) -> None:
        self.rules: list[Rule] = []
        self._rng = random.Random(seed)
        self._np_rng = np.random.default_rng(seed)
        self._buf = {d: bytearray() for d in DIRECTIONS}
        self._held: list[_Held] = []
        self._order = 0
        self._history: dict[str, deque[bytes]] = {}
        self._last: dict[str, object] = {}
        self._last_seq: dict[str, int | None] = {d: None for d in DIRECTIONS}
        self.renumber = {d: False for d in DIRECTIONS}
        self._out_seq = {d: 0 for d in DIRECTIONS}
        self.stats: dict[str, dict[str, dict[str, int]]] = {d: {} for d in DIRECTIONS}
        self.bytes_passed = {d: 0 for d in DIRECTIONS}

    # ------------------------------------------------------------------ the stream

    def process(self, direction: str, data: bytes, now: float) -> bytes:
        """Bytes that arrived from one side; returns what to forward to the other now."""
        buf = self._buf[direction]
        buf += data
        out: list[bytes] = []
        pos = 0
        while True:
            consumed, result = decode_at(buf, pos)
            if result is None:
                break
            raw = bytes(buf[pos : pos + consumed])
            pos += consumed
            if isinstance(result, Frame):
                out += self._frame(direction, raw, result, now)
            else:
                self.bytes_passed[direction] += len(raw)
                out.append(raw)  # not a good frame: passed on as it is
        del buf[:pos]
        return b"".join(out)

    def restart_stream(self, direction: str) -> None:
        """The connection on that side was reopened: forget a partial frame."""
        self._buf[direction].clear()

    def release(self, now: float) -> dict[str, bytes]:
        """Held-back frames now due, per direction."""
        due = sorted((h for h in self._held if h.due <= now), key=lambda h: (h.due, h.order))
        out: dict[str, list[bytes]] = {d: [] for d in DIRECTIONS}
        for h in due:
            self._held.remove(h)
            out[h.direction].append(self._emit(h.direction, h.raw))
        return {d: b"".join(parts) for d, parts in out.items() if parts}

    def next_due(self) -> float | None:
        return min((h.due for h in self._held), default=None)

    def _count(self, direction: str, type_name: str, what: str, n: int = 1) -> None:
        per = self.stats[direction].setdefault(type_name, {})
        per[what] = per.get(what, 0) + n

    def _frame(self, direction: str, raw: bytes, frame: Frame, now: float) -> list[bytes]:
        name = type(frame.message).__name__
        self._last_seq[direction] = frame.seq
        self._last[name] = frame.message
        self._history.setdefault(name, deque(maxlen=HISTORY)).append(raw)
        copies, hold, after_next = 1, None, False
        for rule in list(self.rules):
            if not rule.matches(name) or not rule.fires(self._rng):
                continue
            rule.applied += 1
            if rule.count is not None:
                rule.count -= 1
                if rule.count <= 0:
                    self.rules.remove(rule)
            self._count(direction, name, rule.action)
            if rule.action == "drop":
                return []
            if rule.action == "mutate":
                try:
                    raw = encode(_apply_fields(frame.message, rule.fields), frame.seq)
                except (ValueError, TypeError):  # FaultSyntaxError is a ValueError
                    self._count(direction, name, "mutate_failed")
            elif rule.action == "corrupt":
                raw = raw[:-1] + bytes([raw[-1] ^ 0xFF])
            elif rule.action == "duplicate":
                copies = 2
            elif rule.action == "delay":
                hold = now + rule.delay_s
            elif rule.action == "reorder":
                after_next = True
        self._count(direction, name, "seen")
        waiting = [h for h in self._held if h.direction == direction and h.after_next]
        if hold is not None or after_next:
            self._order += 1
            due = hold if hold is not None else now + REORDER_MAX_S
            self._held.append(_Held(due, self._order, direction, raw, after_next and hold is None))
            return []
        out = [self._emit(direction, raw) for _ in range(copies)]
        for h in waiting:  # frames held to go after this one
            self._held.remove(h)
            out.append(self._emit(direction, h.raw))
        return out

    def _emit(self, direction: str, raw: bytes) -> bytes:
        self.bytes_passed[direction] += len(raw)
        if not self.renumber[direction] or len(raw) < HEADER_SIZE:
            return raw
        seq = self._out_seq[direction]
        self._out_seq[direction] = (seq + 1) % codec.SEQ_MODULO
        return _with_seq(raw, seq)

    # ------------------------------------------------------------------ commands

    def command(self, line: str, now: float) -> tuple[str, dict[str, bytes]]:
        """Apply one command line. Returns the one-line answer and bytes to send at once
        (per direction). Raises ``FaultSyntaxError`` naming what is wrong."""
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            raise FaultSyntaxError(f"cannot read {line!r}: {exc}") from None
        if not words:
            return "ok", {}
        verb, args = words[0].lower(), words[1:]
        handler: Callable[[list[str], float], tuple[str, dict[str, bytes]]] | None = getattr(
            self, f"_cmd_{verb}", None)
        if verb in RULE_ACTIONS:
            return self._add_rule(verb, args), {}
        if handler is None:
            raise FaultSyntaxError(f"unknown command {verb!r}; commands: {', '.join(RULE_ACTIONS)}, replay, inject, "
                                   "header, garbage, renumber, clear, rules, stats, help")
        return handler(args, now)

    def _type(self, name: str, allow_any: bool = True) -> str:
        if name == "*" and allow_any:
            return name
        if name not in _CLASSES:
            raise FaultSyntaxError(f"unknown message type {name!r}; one of {', '.join(sorted(_CLASSES))}"
                                   + (" or *" if allow_any else ""))
        return name

    def _add_rule(self, action: str, args: list[str]) -> str:
        if not args:
            raise FaultSyntaxError(f"{action}: which message type? e.g. '{action} StimEpoch'")
        rule = Rule(action, self._type(args[0]))
        rest = args[1:]
        if action == "delay":
            if not rest:
                raise FaultSyntaxError("delay: how many milliseconds? e.g. 'delay StimEpoch 300'")
            rule.delay_s = _number("delay", rest[0], 0, 600_000) / 1000.0
            rest = rest[1:]
        for key, value in _pairs(action, rest):
            if key == "count":
                rule.count = int(_number(key, value, 1, 10**9))
            elif key == "p":
                rule.p = _number(key, value, 0.0, 1.0)
            elif key == "every":
                rule.every = int(_number(key, value, 1, 10**9))
            elif action == "mutate":
                rule.fields[key] = value
            else:
                raise FaultSyntaxError(f"{action}: unknown option {key!r} (count=N, p=P, every=N)")
        if action == "mutate":
            if not rule.fields:
                raise FaultSyntaxError("mutate: which fields? e.g. 'mutate StimEpoch sample_rate_hz=0'")
            if rule.type_name == "*":
                raise FaultSyntaxError("mutate needs one message type, not *")
            _apply_fields(_DEFAULTS[rule.type_name](), rule.fields)  # check the fields now
        self.rules.append(rule)
        return f"ok: rule {len(self.rules)}: {rule.describe()}"

    def _cmd_replay(self, args: list[str], now: float) -> tuple[str, dict[str, bytes]]:
        if not args:
            raise FaultSyntaxError("replay: which message type? e.g. 'replay StimEpoch n=3'")
        name = self._type(args[0], allow_any=False)
        n = 1
        for key, value in _pairs("replay", args[1:]):
            if key != "n":
                raise FaultSyntaxError(f"replay: unknown option {key!r} (n=N)")
            n = int(_number(key, value, 1, HISTORY))
        frames = list(self._history.get(name, ()))[-n:]
        direction = direction_of_type(name)
        self._count(direction, name, "replayed", len(frames))
        return (f"ok: replayed {len(frames)} {name} frame(s)",
                {direction: b"".join(self._emit(direction, raw) for raw in frames)} if frames else {})

    def _cmd_inject(self, args: list[str], now: float) -> tuple[str, dict[str, bytes]]:
        if not args:
            raise FaultSyntaxError("inject: which message type? e.g. 'inject BoardHeartbeat board_time_us=0'")
        name = self._type(args[0], allow_any=False)
        fields = dict(_pairs("inject", args[1:]))
        seq_text = fields.pop("seq", None)
        direction = direction_of_type(name)
        template = self._last.get(name) or _DEFAULTS[name]()
        message = _apply_fields(template, fields)
        if seq_text is not None:
            seq = int(_number("seq", seq_text, 0, codec.SEQ_MODULO - 1))
        else:
            last = self._last_seq[direction]
            seq = 0 if last is None else (last + 1) % codec.SEQ_MODULO
        try:
            raw = encode(message, seq)
        except (ValueError, TypeError) as exc:
            raise FaultSyntaxError(f"inject {name}: {exc}") from None
        self._count(direction, name, "injected")
        out = {direction: self._emit(direction, raw)}
        return f"ok: injected {name} (seq {seq}) towards the {_towards(direction)}", out

    def _cmd_header(self, args: list[str], now: float) -> tuple[str, dict[str, bytes]]:
        if len(args) < 2:
            raise FaultSyntaxError("header: type and length, e.g. 'header StimEpoch 131072'")
        name = self._type(args[0], allow_any=False)
        length = int(_number("length", args[1], 0, 2**32 - 1))
        fields = dict(_pairs("header", args[2:]))
        direction = direction_of_type(name)
        last = self._last_seq[direction]
        seq = int(_number("seq", fields["seq"], 0, 2**32 - 1)) if "seq" in fields else (0 if last is None else last + 1)
        head = codec._HEAD.pack(codec.SYNC, codec.FRAME_VERSION, codec.MESSAGE_TYPES[_CLASSES[name]], 0, 0,
                                seq % codec.SEQ_MODULO, length)
        head += binascii.crc_hqx(head, 0xFFFF).to_bytes(2, "little")
        self._count(direction, name, "lone_header")
        kind = "beyond" if length > max_payload(codec.MESSAGE_TYPES[_CLASSES[name]]) else "within"
        return (f"ok: a lone {name} header announcing {length} bytes ({kind} the type's maximum) towards the "
                f"{_towards(direction)}", {direction: head})

    def _cmd_garbage(self, args: list[str], now: float) -> tuple[str, dict[str, bytes]]:
        if not args:
            raise FaultSyntaxError("garbage: how many bytes? e.g. 'garbage 100'")
        n = int(_number("garbage", args[0], 1, 1 << 20))
        fields = dict(_pairs("garbage", args[1:]))
        to = fields.get("to", "engine")
        if to not in ("engine", "board"):
            raise FaultSyntaxError(f"garbage: to=engine or to=board (got {to!r})")
        direction = "board" if to == "engine" else "host"
        data = self._np_rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        self.bytes_passed[direction] += n
        return f"ok: {n} random bytes towards the {to}", {direction: data}

    def _cmd_renumber(self, args: list[str], now: float) -> tuple[str, dict[str, bytes]]:
        if not args or args[0] not in ("on", "off"):
            raise FaultSyntaxError("renumber on|off [dir=board|host]")
        fields = dict(_pairs("renumber", args[1:]))
        dirs = [fields["dir"]] if "dir" in fields else list(DIRECTIONS)
        for d in dirs:
            if d not in DIRECTIONS:
                raise FaultSyntaxError(f"renumber: dir=board or dir=host (got {d!r})")
            if args[0] == "on" and not self.renumber[d]:
                last = self._last_seq[d]
                self._out_seq[d] = 0 if last is None else (last + 1) % codec.SEQ_MODULO
            self.renumber[d] = args[0] == "on"
        return f"ok: renumbering {args[0]} ({', '.join(dirs)})", {}

    def _cmd_clear(self, args: list[str], now: float) -> tuple[str, dict[str, bytes]]:
        what = args[0] if args else "all"
        before = len(self.rules)
        self.rules = [] if what == "all" else [r for r in self.rules if r.type_name != self._type(what)]
        return f"ok: {before - len(self.rules)} rule(s) removed", {}

    def _cmd_rules(self, args: list[str], now: float) -> tuple[str, dict[str, bytes]]:
        if not self.rules:
            return "ok: no rules", {}
        return "ok: " + "; ".join(f"{i + 1}: {r.describe()}" for i, r in enumerate(self.rules)), {}

    def _cmd_stats(self, args: list[str], now: float) -> tuple[str, dict[str, bytes]]:
        return "ok: " + json.dumps(self.snapshot(), sort_keys=True), {}

    def _cmd_help(self, args: list[str], now: float) -> tuple[str, dict[str, bytes]]:
        return ("ok: drop|delay MS|duplicate|reorder|corrupt|mutate F=V TYPE [count=N p=P every=N]; replay TYPE [n=N]; "
                "inject TYPE [F=V ...] [seq=N]; header TYPE LENGTH; garbage N [to=engine|board]; "
                "renumber on|off; clear [TYPE]; rules; stats"), {}

    def snapshot(self) -> dict[str, Any]:
        """Counters per direction and type, bytes passed, rules, frames held back."""
        return {"frames": self.stats, "bytes": dict(self.bytes_passed), "rules": [r.describe() for r in self.rules],
                "held": len(self._held), "renumber": dict(self.renumber)}


# ----------------------------------------------------------------------------- helpers


def _towards(direction: str) -> str:
    return "engine" if direction == "board" else "board"


def _pairs(what: str, args: list[str]) -> list[tuple[str, str]]:
    out = []
    for a in args:
        key, sep, value = a.partition("=")
        if not sep or not key:
            raise FaultSyntaxError(f"{what}: expected NAME=VALUE, got {a!r}")
        out.append((key, value))
    return out


def _number(name: str, text: str, lo: float, hi: float) -> float:
    try:
        value = float(int(text, 0)) if text.lower().startswith(("0x", "-0x")) else float(text)
    except ValueError:
        raise FaultSyntaxError(f"{name}={text!r} is not a number") from None
    if not lo <= value <= hi:
        raise FaultSyntaxError(f"{name}={text} out of range {lo:g}-{hi:g}")
    return value


def _value(cls_name: str, name: str, text: str, current: Any) -> Any:
    low = text.lower()
    if name in _ENUMS:
        kind = _ENUMS[name]
        try:
            return kind(int(text, 0)) if text[:1].isdigit() else kind[text.upper()]
        except (KeyError, ValueError):
            raise FaultSyntaxError(f"{cls_name}.{name}: {text!r} is not one of "
                                   f"{', '.join(e.name for e in kind if e.name)}") from None
    if low == "none":
        return None
    if low in ("true", "false"):
        return low == "true"
    if isinstance(current, str):
        return text
    try:
        return int(text, 0)
    except ValueError:
        raise FaultSyntaxError(f"{cls_name}.{name}: {text!r} is not an integer") from None


def _apply_fields(message: Any, fields: dict[str, str]) -> Any:
    """``message`` with ``fields`` changed (``n``/``channels`` reshape the samples)."""
    cls_name = type(message).__name__
    names = {f.name for f in dataclasses.fields(message)}
    changes: dict[str, Any] = {}
    shape: dict[str, int] = {}
    for key, text in fields.items():
        if key in ("n", "channels") and "samples" in names:
            shape[key] = int(_number(key, text, 0, 1 << 16 if key == "n" else 255))
            continue
        if key not in names:
            raise FaultSyntaxError(f"{cls_name} has no field {key!r}; fields: {', '.join(sorted(names))}")
        changes[key] = _value(cls_name, key, text, getattr(message, key))
    if shape:
        samples = np.asarray(message.samples)
        ch = shape.get("channels", int(samples.shape[0]))
        n = shape.get("n", int(samples.shape[1]))
        new = np.zeros((ch, n), np.int32)
        new[: min(ch, samples.shape[0]), : min(n, samples.shape[1])] = samples[:ch, :n]
        changes["samples"] = new
        if "pre_samples" in names and "pre_samples" not in changes:
            changes["pre_samples"] = min(message.pre_samples, n)
    try:
        return dataclasses.replace(message, **changes)
    except (TypeError, ValueError) as exc:
        raise FaultSyntaxError(f"{cls_name}: {exc}") from None


def _with_seq(raw: bytes, seq: int) -> bytes:
    """A frame's bytes with another sequence number, both CRCs redone (a frame whose
    CRC-32 was damaged on purpose stays damaged)."""
    damaged = zlib.crc32(raw[:-4]) != int.from_bytes(raw[-4:], "little")
    head = bytearray(raw[:HEADER_SIZE])
    head[6:10] = seq.to_bytes(4, "little")
    head[14:16] = binascii.crc_hqx(bytes(head[:14]), 0xFFFF).to_bytes(2, "little")
    body = raw[HEADER_SIZE:-4]
    crc = zlib.crc32(body, zlib.crc32(bytes(head))) ^ (0xFF000000 if damaged else 0)
    return bytes(head) + body + crc.to_bytes(4, "little")


__all__ = ["FaultPlan", "FaultSyntaxError", "Rule", "direction_of_type", "DIRECTIONS"]
