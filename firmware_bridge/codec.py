"""The wire codec: Board API messages <-> framed bytes, as specified in ``PROTOCOL.md``.

Owns: frame layout, message type ids, payload packing, CRCs, the pure ``decode`` step and
the ``Decoder`` convenience that feeds a byte stream through it with counters.
May import: the standard library, numpy and ``firmware_bridge.messages``.

Pure: no I/O, threads or clocks. ``decode`` never raises, whatever it is given; bad frames
come back as ``Rejected`` with a reason so the caller can count and drop them.

Frame (all little-endian)::

    0  u8   sync 0xA5
    1  u8   sync 0x5A
    2  u8   frame version (1)
    3  u8   message type
    4  u8   flags (0; receivers ignore bits they do not know)
    5  u8   reserved (0)
    6  u32  sequence number (per direction)
    10 u32  payload length (<= MAX_PAYLOAD)
    14 u16  header CRC: CRC-16/CCITT-FALSE over bytes 0..13
    16 ...  payload
    16+n u32 CRC-32 (zlib/IEEE 802.3) over bytes 0..15+n (header and payload)

Sample arrays are packed with numpy as int32 little-endian, channel-major; never a
per-sample Python loop.
"""

from __future__ import annotations

import binascii
import enum
import struct
import zlib
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from firmware_bridge.messages import (
    PROTOCOL_VERSION,
    Ack,
    BoardHeartbeat,
    BoardStatus,
    Capabilities,
    ConfigureAcquisition,
    Electrode,
    EmgBlock,
    Fault,
    Hello,
    HostHeartbeat,
    ImpedanceRequest,
    ImpedanceResult,
    Nack,
    NackReason,
    Output,
    SimControl,
    StimEpoch,
    StimMode,
    Stimulate,
)

SYNC = b"\xa5\x5a"
FRAME_VERSION = 1
HEADER_SIZE = 16
TRAILER_SIZE = 4
OVERHEAD = HEADER_SIZE + TRAILER_SIZE
MAX_PAYLOAD = 131072  # bytes; larger lengths are rejected as "too_long"
SEQ_MODULO = 1 << 32

_HEAD = struct.Struct("<2sBBBBII")  # bytes 0..13, without the header CRC
_HEAD_FULL = struct.Struct("<2sBBBBIIH")
_SYNC0 = SYNC[0]


class MsgType:
    """Message type ids (byte 3 of the header)."""

    # host -> board
    HELLO = 0x01
    CONFIGURE_ACQUISITION = 0x02
    STIMULATE = 0x03
    IMPEDANCE_REQUEST = 0x04
    HOST_HEARTBEAT = 0x05
    # board -> host
    CAPABILITIES = 0x41
    STIM_EPOCH = 0x42
    EMG_BLOCK = 0x43
    IMPEDANCE_RESULT = 0x44
    BOARD_STATUS = 0x45
    BOARD_HEARTBEAT = 0x46
    ACK = 0x47
    NACK = 0x48
    # host -> virtual board only (simulation extension; real boards nack it)
    SIM_CONTROL = 0x70


# The longest payload each type may announce (PROTOCOL.md section 2). A header that
# announces more is refused at once ("too_long": one byte dropped, resynchronise) instead
# of making the receiver wait for bytes that are not coming. Fixed-size messages keep room
# for fields a later revision may append; unknown types may use MAX_PAYLOAD.
MAX_PAYLOAD_BY_TYPE: dict[int, int] = {
    MsgType.HELLO: 512,
    MsgType.CONFIGURE_ACQUISITION: 256,
    MsgType.STIMULATE: 256,
    MsgType.IMPEDANCE_REQUEST: 256,
    MsgType.HOST_HEARTBEAT: 256,
    MsgType.SIM_CONTROL: 1 + 255 + 2 + 65535,
    MsgType.CAPABILITIES: 4096,
    MsgType.STIM_EPOCH: MAX_PAYLOAD,
    MsgType.EMG_BLOCK: MAX_PAYLOAD,
    MsgType.IMPEDANCE_RESULT: 2048,
    MsgType.BOARD_STATUS: 256,
    MsgType.BOARD_HEARTBEAT: 256,
    MsgType.ACK: 256,
    MsgType.NACK: 512,
}


def max_payload(msg_type: int) -> int:
    """The longest payload a frame of ``msg_type`` may announce."""
    return MAX_PAYLOAD_BY_TYPE.get(msg_type, MAX_PAYLOAD)


HOST_TYPES = frozenset({0x01, 0x02, 0x03, 0x04, 0x05}) | frozenset(range(0x70, 0x80))
BOARD_TYPES = frozenset(range(0x40, 0x70))


def direction_of(msg_type: int) -> str:
    """``"host"`` for host->board type ids (0x01-0x3F, 0x70-0x7F), else ``"board"``."""
    return "board" if 0x40 <= msg_type <= 0x6F else "host"


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Frame:
    """A decoded frame: the sender's sequence number and the typed message."""

    seq: int
    message: object


@dataclass(frozen=True)
class Rejected:
    """Bytes the decoder dropped, and why.

    ``reason`` is one of ``REJECT_REASONS``. ``seq`` and ``msg_type`` are set when the
    header was intact (its CRC good: also for ``bad_crc`` and ``too_long``) so a board can
    answer the frame with a Nack.
    """

    reason: str
    seq: int | None = None
    msg_type: int | None = None
    detail: str = ""


REJECT_REASONS = (
    "garbage",  # bytes before the next sync word
    "bad_header_crc",  # sync word found but the header CRC is wrong (1 byte skipped)
    "too_long",  # header CRC good but payload length above the type's maximum (1 byte skipped)
    "truncated",  # a header whose frame never completes: a whole good frame starts inside it
    "bad_crc",  # frame CRC-32 wrong (1 byte skipped, then resynchronise)
    "bad_version",  # intact frame of another frame version (whole frame dropped)
    "unknown_type",  # intact frame of a type this codec does not know (whole frame)
    "malformed",  # intact frame whose payload does not parse (whole frame)
)

DecodeResult = tuple[int, Frame | Rejected | None]


class MalformedPayload(ValueError):
    """A payload that does not parse as its message type (internal to the codec)."""


# ----------------------------------------------------------------------------- field packing helpers


def _check_uint(cls: str, name: str, value: object, bits: int) -> int:
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, int) or not 0 <= value < (1 << bits):
        raise ValueError(f"{cls}.{name}={value!r} does not fit the wire field (uint{bits}: 0..{(1 << bits) - 1})")
    return value


def _check_int(cls: str, name: str, value: object, bits: int) -> int:
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{cls}.{name}={value!r} does not fit the wire field (int{bits}: {lo}..{hi})")
    return value


def _pack_str(cls: str, name: str, value: object, len_bits: int) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{cls}.{name} must be a str (got {type(value).__name__})")
    raw = value.encode("utf-8")
    if len(raw) >= (1 << len_bits):
        raise ValueError(f"{cls}.{name} is {len(raw)} bytes of UTF-8; the wire allows {(1 << len_bits) - 1}")
    return len(raw).to_bytes(len_bits // 8, "little") + raw


def _unpack_str(payload: bytes, offset: int, len_bits: int) -> tuple[str, int]:
    nb = len_bits // 8
    if offset + nb > len(payload):
        raise MalformedPayload("string length past the end of the payload")
    n = int.from_bytes(payload[offset : offset + nb], "little")
    end = offset + nb + n
    if end > len(payload):
        raise MalformedPayload("string past the end of the payload")
    try:
        return payload[offset + nb : end].decode("utf-8"), end
    except UnicodeDecodeError as exc:
        raise MalformedPayload(f"string is not UTF-8 ({exc.reason})") from None


def _samples_bytes(cls: str, samples: object) -> tuple[int, int, bytes]:
    arr = np.asarray(samples)
    if arr.ndim != 2:
        raise ValueError(f"{cls}.samples must have shape (channels, n) (got shape {arr.shape})")
    channels, n = arr.shape
    if not 1 <= channels <= 255:
        raise ValueError(f"{cls}.samples has {channels} channels; the wire allows 1..255")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{cls}.samples must be integer ADC counts (got dtype {arr.dtype})")
    if arr.dtype.itemsize > 4 or (arr.dtype.kind == "u" and arr.dtype.itemsize == 4):
        if arr.size and (int(arr.min()) < -(1 << 31) or int(arr.max()) > (1 << 31) - 1):
            raise ValueError(f"{cls}.samples exceed the int32 range of the wire")
    return channels, n, np.ascontiguousarray(arr, dtype="<i4").tobytes()


def _samples_from(payload: bytes, offset: int, channels: int, n: int) -> np.ndarray:
    if channels < 1:
        raise MalformedPayload("zero channels")
    if len(payload) - offset != 4 * channels * n:
        raise MalformedPayload(
            f"sample block is {len(payload) - offset} bytes, expected {4 * channels * n} ({channels} x {n} int32)"
        )
    arr = np.frombuffer(payload, dtype="<i4", count=channels * n, offset=offset)
    return arr.reshape(channels, n).astype(np.int32)  # astype copies: owned, writable, native


def _expect_len(payload: bytes, n: int) -> None:
    if len(payload) != n:
        raise MalformedPayload(f"payload is {len(payload)} bytes, expected {n}")


_E = TypeVar("_E", bound=enum.Enum)


def _enum(kind: type[_E], value: int, what: str) -> _E:
    try:
        return kind(value)
    except ValueError:
        raise MalformedPayload(f"unknown {what} {value}") from None


# ----------------------------------------------------------------------------- per-message packers


def _pack_hello(m: Hello) -> bytes:
    return _check_uint("Hello", "protocol_version", m.protocol_version, 16).to_bytes(2, "little") + _pack_str(
        "Hello", "host_name", m.host_name, 8
    )


def _unpack_hello(p: bytes) -> Hello:
    if len(p) < 3:
        raise MalformedPayload("Hello payload too short")
    version = int.from_bytes(p[0:2], "little")
    name, end = _unpack_str(p, 2, 8)
    _expect_len(p, end)
    return Hello(protocol_version=version, host_name=name)


_CONF = struct.Struct("<IBBHHHHH")


def _pack_configure(m: ConfigureAcquisition) -> bytes:
    c = "ConfigureAcquisition"
    return _CONF.pack(
        _check_uint(c, "sample_rate_hz", m.sample_rate_hz, 32),
        _check_uint(c, "channel_mask", m.channel_mask, 8),
        1 if m.stream_enabled else 0,
        _check_uint(c, "gain", m.gain, 16),
        _check_uint(c, "stream_block_samples", m.stream_block_samples, 16),
        _check_uint(c, "stream_decimation", m.stream_decimation, 16),
        _check_uint(c, "epoch_pre_ms", m.epoch_pre_ms, 16),
        _check_uint(c, "epoch_post_ms", m.epoch_post_ms, 16),
    )


def _unpack_configure(p: bytes) -> ConfigureAcquisition:
    _expect_len(p, _CONF.size)
    rate, mask, stream, gain, block, dec, pre, post = _CONF.unpack(p)
    if stream > 1:
        raise MalformedPayload(f"stream_enabled must be 0 or 1 (got {stream})")
    return ConfigureAcquisition(
        sample_rate_hz=rate,
        channel_mask=mask,
        gain=gain,
        stream_enabled=bool(stream),
        stream_block_samples=block,
        stream_decimation=dec,
        epoch_pre_ms=pre,
        epoch_post_ms=post,
    )


_STIM = struct.Struct("<BBHII")  # 12 bytes; protocol 1.1 appends a u32 config_token


def _pack_stimulate(m: Stimulate) -> bytes:
    c = "Stimulate"
    body = _STIM.pack(
        _check_uint(c, "output", m.output, 8),
        _check_uint(c, "mode", m.mode, 8),
        _check_uint(c, "pulse_width_us", m.pulse_width_us, 16),
        _check_uint(c, "current_uA", m.current_uA, 32),
        _check_uint(c, "rate_mHz", m.rate_mHz, 32),
    )
    if m.config_token is None:
        return body
    return body + _check_uint(c, "config_token", m.config_token, 32).to_bytes(4, "little")


def _unpack_stimulate(p: bytes) -> Stimulate:
    if len(p) not in (_STIM.size, _STIM.size + 4):
        raise MalformedPayload(f"payload is {len(p)} bytes, expected {_STIM.size} or {_STIM.size + 4}")
    output, mode, width, current, rate = _STIM.unpack_from(p, 0)
    token = int.from_bytes(p[_STIM.size :], "little") if len(p) > _STIM.size else None
    return Stimulate(
        output=_enum(Output, output, "output"),
        mode=_enum(StimMode, mode, "stimulation mode"),
        current_uA=current,
        pulse_width_us=width,
        rate_mHz=rate,
        config_token=token,
    )


def _pack_empty(m: object) -> bytes:
    return b""


def _unpack_impedance_request(p: bytes) -> ImpedanceRequest:
    _expect_len(p, 0)
    return ImpedanceRequest()


_HHB = struct.Struct("<IB")


def _pack_host_heartbeat(m: HostHeartbeat) -> bytes:
    return _HHB.pack(_check_uint("HostHeartbeat", "counter", m.counter, 32), 1 if m.alarm_active else 0)


def _unpack_host_heartbeat(p: bytes) -> HostHeartbeat:
    _expect_len(p, _HHB.size)
    counter, flags = _HHB.unpack(p)
    return HostHeartbeat(counter=counter, alarm_active=bool(flags & 1))


def _pack_sim_control(m: SimControl) -> bytes:
    return _pack_str("SimControl", "command", m.command, 8) + _pack_str("SimControl", "args_json", m.args_json, 16)


def _unpack_sim_control(p: bytes) -> SimControl:
    command, off = _unpack_str(p, 0, 8)
    args, end = _unpack_str(p, off, 16)
    _expect_len(p, end)
    return SimControl(command=command, args_json=args)


_CAPS = struct.Struct("<HBBIHHII")
CAPS_FLAG_SIMULATED = 0x01  # a virtual board
CAPS_FLAG_CONFIG_TOKEN = 0x02  # protocol revision 1.1: Stimulate/StimEpoch carry a configuration token


def _pack_capabilities(m: Capabilities) -> bytes:
    c = "Capabilities"
    rates = tuple(m.sample_rates_hz)
    outputs = tuple(m.outputs)
    if len(rates) > 255 or len(outputs) > 255:
        raise ValueError(f"{c}: at most 255 sample rates and 255 outputs")
    head = _CAPS.pack(
        _check_uint(c, "protocol_version", m.protocol_version, 16),
        _check_uint(c, "channels", m.channels, 8),
        (1 if m.simulated else 0) | (CAPS_FLAG_CONFIG_TOKEN if m.config_token else 0),
        _check_uint(c, "max_current_uA", m.max_current_uA, 32),
        _check_uint(c, "min_pulse_width_us", m.min_pulse_width_us, 16),
        _check_uint(c, "max_pulse_width_us", m.max_pulse_width_us, 16),
        _check_uint(c, "min_rate_mHz", m.min_rate_mHz, 32),
        _check_uint(c, "max_rate_mHz", m.max_rate_mHz, 32),
    )
    parts = [head, bytes([len(rates)])]
    parts += [_check_uint(c, "sample_rates_hz", r, 32).to_bytes(4, "little") for r in rates]
    parts.append(bytes([len(outputs)]))
    parts.append(bytes(_check_uint(c, "outputs", o, 8) for o in outputs))
    parts.append(_pack_str(c, "firmware_version", m.firmware_version, 8))
    parts.append(_pack_str(c, "board_id", m.board_id, 8))
    return b"".join(parts)


def _unpack_capabilities(p: bytes) -> Capabilities:
    if len(p) < _CAPS.size + 1:
        raise MalformedPayload("Capabilities payload too short")
    version, channels, flags, max_i, min_pw, max_pw, min_rate, max_rate = _CAPS.unpack_from(p, 0)
    off = _CAPS.size
    n_rates = p[off]
    off += 1
    if off + 4 * n_rates + 1 > len(p):
        raise MalformedPayload("sample rate list past the end of the payload")
    rates = tuple(int.from_bytes(p[off + 4 * i : off + 4 * i + 4], "little") for i in range(n_rates))
    off += 4 * n_rates
    n_out = p[off]
    off += 1
    if off + n_out > len(p):
        raise MalformedPayload("output list past the end of the payload")
    outputs = tuple(_enum(Output, b, "output") for b in p[off : off + n_out])
    off += n_out
    firmware, off = _unpack_str(p, off, 8)
    board_id, end = _unpack_str(p, off, 8)
    _expect_len(p, end)
    return Capabilities(
        protocol_version=version,
        firmware_version=firmware,
        board_id=board_id,
        channels=channels,
        sample_rates_hz=rates,
        max_current_uA=max_i,
        min_pulse_width_us=min_pw,
        max_pulse_width_us=max_pw,
        min_rate_mHz=min_rate,
        max_rate_mHz=max_rate,
        outputs=outputs,
        simulated=bool(flags & CAPS_FLAG_SIMULATED),
        config_token=bool(flags & CAPS_FLAG_CONFIG_TOKEN),
    )


_EPOCH = struct.Struct("<QIBBHIiIIII")  # 40 bytes


def _pack_stim_epoch(m: StimEpoch) -> bytes:
    c = "StimEpoch"
    channels, n, data = _samples_bytes(c, m.samples)
    pre = _check_uint(c, "pre_samples", m.pre_samples, 32)
    if pre > n:
        raise ValueError(f"{c}.pre_samples={pre} is beyond the {n} samples of the epoch")
    token = b"" if m.config_token is None else _check_uint(c, "config_token", m.config_token, 32).to_bytes(4, "little")
    return (
        _EPOCH.pack(
            _check_uint(c, "board_time_us", m.board_time_us, 64),
            _check_uint(c, "stim_counter", m.stim_counter, 32),
            _check_uint(c, "output", m.output, 8),
            channels,
            _check_uint(c, "pulse_width_us", m.pulse_width_us, 16),
            _check_uint(c, "set_current_uA", m.set_current_uA, 32),
            _check_int(c, "delivered_current_uA", m.delivered_current_uA, 32),
            _check_uint(c, "sample_rate_hz", m.sample_rate_hz, 32),
            pre,
            _check_uint(c, "nv_per_count", m.nv_per_count, 32),
            n,
        )
        + token
        + data
    )


def _unpack_stim_epoch(p: bytes) -> StimEpoch:
    if len(p) < _EPOCH.size:
        raise MalformedPayload("StimEpoch payload too short")
    t, counter, output, channels, width, set_i, delivered, rate, pre, scale, n = _EPOCH.unpack_from(p, 0)
    if pre > n:
        raise MalformedPayload(f"pre_samples {pre} beyond the {n} samples of the epoch")
    # 1.0: 40-byte header then the samples; 1.1 with a token: 44 bytes (u32 config_token
    # at offset 40). The two lengths differ by exactly 4 for the same channels and n.
    token = None
    offset = _EPOCH.size
    if channels >= 1 and len(p) == _EPOCH.size + 4 + 4 * channels * n:
        token = int.from_bytes(p[_EPOCH.size : _EPOCH.size + 4], "little")
        offset += 4
    samples = _samples_from(p, offset, channels, n)
    return StimEpoch(
        board_time_us=t,
        stim_counter=counter,
        output=_enum(Output, output, "output"),
        set_current_uA=set_i,
        delivered_current_uA=delivered,
        pulse_width_us=width,
        sample_rate_hz=rate,
        pre_samples=pre,
        nv_per_count=scale,
        samples=samples,
        config_token=token,
    )


_EMG = struct.Struct("<QQIIB3xI")  # 32 bytes


def _pack_emg_block(m: EmgBlock) -> bytes:
    c = "EmgBlock"
    channels, n, data = _samples_bytes(c, m.samples)
    return (
        _EMG.pack(
            _check_uint(c, "board_time_us", m.board_time_us, 64),
            _check_uint(c, "first_sample", m.first_sample, 64),
            _check_uint(c, "sample_rate_hz", m.sample_rate_hz, 32),
            _check_uint(c, "nv_per_count", m.nv_per_count, 32),
            channels,
            n,
        )
        + data
    )


def _unpack_emg_block(p: bytes) -> EmgBlock:
    if len(p) < _EMG.size:
        raise MalformedPayload("EmgBlock payload too short")
    t, first, rate, scale, channels, n = _EMG.unpack_from(p, 0)
    samples = _samples_from(p, _EMG.size, channels, n)
    return EmgBlock(board_time_us=t, first_sample=first, sample_rate_hz=rate, nv_per_count=scale, samples=samples)


_IMP_ENTRY = struct.Struct("<Bi")


def _pack_impedance_result(m: ImpedanceResult) -> bytes:
    c = "ImpedanceResult"
    entries = tuple(m.impedances_ohm)
    if len(entries) > 255:
        raise ValueError(f"{c}: at most 255 electrodes")
    parts = [_check_uint(c, "board_time_us", m.board_time_us, 64).to_bytes(8, "little"), bytes([len(entries)])]
    for electrode, ohm in entries:
        parts.append(
            _IMP_ENTRY.pack(_check_uint(c, "electrode", electrode, 8), _check_int(c, "impedances_ohm", ohm, 32))
        )
    return b"".join(parts)


def _unpack_impedance_result(p: bytes) -> ImpedanceResult:
    if len(p) < 9:
        raise MalformedPayload("ImpedanceResult payload too short")
    t = int.from_bytes(p[0:8], "little")
    count = p[8]
    _expect_len(p, 9 + count * _IMP_ENTRY.size)
    entries = []
    for i in range(count):
        e, ohm = _IMP_ENTRY.unpack_from(p, 9 + i * _IMP_ENTRY.size)
        entries.append((_enum(Electrode, e, "electrode"), ohm))
    return ImpedanceResult(board_time_us=t, impedances_ohm=tuple(entries))


_STATUS = struct.Struct("<QIB3xII")  # 24 bytes


def _pack_board_status(m: BoardStatus) -> bytes:
    c = "BoardStatus"
    mask = 0
    for o in m.stimulating:
        mask |= 1 << _check_uint(c, "stimulating", o, 3)
    return _STATUS.pack(
        _check_uint(c, "board_time_us", m.board_time_us, 64),
        _check_uint(c, "faults", int(m.faults), 32),
        mask,
        _check_uint(c, "host_heartbeat_age_ms", m.host_heartbeat_age_ms, 32),
        _check_uint(c, "uptime_s", m.uptime_s, 32),
    )


def _unpack_board_status(p: bytes) -> BoardStatus:
    _expect_len(p, _STATUS.size)
    t, faults, mask, age, uptime = _STATUS.unpack(p)
    stimulating = tuple(_enum(Output, bit, "output") for bit in range(8) if mask >> bit & 1)
    return BoardStatus(
        board_time_us=t, faults=Fault(faults), stimulating=stimulating, host_heartbeat_age_ms=age, uptime_s=uptime
    )


_BHB = struct.Struct("<QI")


def _pack_board_heartbeat(m: BoardHeartbeat) -> bytes:
    c = "BoardHeartbeat"
    return _BHB.pack(_check_uint(c, "board_time_us", m.board_time_us, 64), _check_uint(c, "counter", m.counter, 32))


def _unpack_board_heartbeat(p: bytes) -> BoardHeartbeat:
    _expect_len(p, _BHB.size)
    t, counter = _BHB.unpack(p)
    return BoardHeartbeat(board_time_us=t, counter=counter)


def _pack_ack(m: Ack) -> bytes:
    return _check_uint("Ack", "seq", m.seq, 32).to_bytes(4, "little")


def _unpack_ack(p: bytes) -> Ack:
    _expect_len(p, 4)
    return Ack(seq=int.from_bytes(p, "little"))


def _pack_nack(m: Nack) -> bytes:
    return (
        _check_uint("Nack", "seq", m.seq, 32).to_bytes(4, "little")
        + bytes([_check_uint("Nack", "reason", m.reason, 8)])
        + _pack_str("Nack", "detail", m.detail, 8)
    )


def _unpack_nack(p: bytes) -> Nack:
    if len(p) < 6:
        raise MalformedPayload("Nack payload too short")
    seq = int.from_bytes(p[0:4], "little")
    reason = _enum(NackReason, p[4], "nack reason")
    detail, end = _unpack_str(p, 5, 8)
    _expect_len(p, end)
    return Nack(seq=seq, reason=reason, detail=detail)


# ----------------------------------------------------------------------------- type table

# (type code, packer, unpacker); each packer takes the one class it is listed with, which a
# dict's type cannot say: hence Any for its argument.
_Codec = tuple[int, Callable[[Any], bytes], Callable[[bytes], object]]

_BY_CLASS: dict[type, _Codec] = {
    Hello: (MsgType.HELLO, _pack_hello, _unpack_hello),
    ConfigureAcquisition: (MsgType.CONFIGURE_ACQUISITION, _pack_configure, _unpack_configure),
    Stimulate: (MsgType.STIMULATE, _pack_stimulate, _unpack_stimulate),
    ImpedanceRequest: (MsgType.IMPEDANCE_REQUEST, _pack_empty, _unpack_impedance_request),
    HostHeartbeat: (MsgType.HOST_HEARTBEAT, _pack_host_heartbeat, _unpack_host_heartbeat),
    SimControl: (MsgType.SIM_CONTROL, _pack_sim_control, _unpack_sim_control),
    Capabilities: (MsgType.CAPABILITIES, _pack_capabilities, _unpack_capabilities),
    StimEpoch: (MsgType.STIM_EPOCH, _pack_stim_epoch, _unpack_stim_epoch),
    EmgBlock: (MsgType.EMG_BLOCK, _pack_emg_block, _unpack_emg_block),
    ImpedanceResult: (MsgType.IMPEDANCE_RESULT, _pack_impedance_result, _unpack_impedance_result),
    BoardStatus: (MsgType.BOARD_STATUS, _pack_board_status, _unpack_board_status),
    BoardHeartbeat: (MsgType.BOARD_HEARTBEAT, _pack_board_heartbeat, _unpack_board_heartbeat),
    Ack: (MsgType.ACK, _pack_ack, _unpack_ack),
    Nack: (MsgType.NACK, _pack_nack, _unpack_nack),
}
_BY_TYPE: dict[int, tuple[type, Callable[[bytes], object]]] = {t: (cls, un) for cls, (t, _p, un) in _BY_CLASS.items()}

MESSAGE_TYPES: dict[type, int] = {cls: t for cls, (t, _p, _u) in _BY_CLASS.items()}


def type_id(message_or_class: object) -> int:
    """The wire type id of a message (or message class)."""
    cls = message_or_class if isinstance(message_or_class, type) else type(message_or_class)
    try:
        return _BY_CLASS[cls][0]
    except KeyError:
        raise TypeError(f"{cls.__name__} is not a Board API message") from None


# ----------------------------------------------------------------------------- encode / decode


def header_crc(header14: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor)."""
    return binascii.crc_hqx(header14, 0xFFFF)


def frame_crc(data: bytes) -> int:
    """CRC-32 as zlib computes it (IEEE 802.3, reflected poly 0xEDB88320, init/xorout 0xFFFFFFFF)."""
    return zlib.crc32(data)


def encode(message: object, seq: int, *, flags: int = 0) -> bytes:
    """One complete frame carrying ``message`` with sequence number ``seq``.

    Raises ``TypeError`` for an object that is not a Board API message and ``ValueError``
    (naming the field) for a value that does not fit its wire field.
    """
    try:
        msg_type, pack, _unpack = _BY_CLASS[type(message)]
    except KeyError:
        raise TypeError(f"cannot encode {type(message).__name__}: not a Board API message") from None
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < SEQ_MODULO:
        raise ValueError(f"sequence number {seq!r} outside 0..{SEQ_MODULO - 1}")
    payload = pack(message)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(
            f"{type(message).__name__} payload is {len(payload)} bytes; the protocol allows {MAX_PAYLOAD}"
        )
    head = _HEAD.pack(SYNC, FRAME_VERSION, msg_type, flags & 0xFF, 0, seq, len(payload))
    head += binascii.crc_hqx(head, 0xFFFF).to_bytes(2, "little")
    crc = zlib.crc32(payload, zlib.crc32(head))
    return b"".join((head, payload, crc.to_bytes(4, "little")))


def decode(buffer: bytes | bytearray | memoryview) -> DecodeResult:
    """Decode the first frame in ``buffer``.

    Returns ``(consumed, result)``:

    - ``(0, None)``: more bytes are needed (nothing to drop yet);
    - ``(n, Frame)``: a good frame of ``n`` bytes;
    - ``(n, Rejected)``: ``n`` bytes dropped, with the reason.

    Never raises. Call again on the remaining bytes until it returns ``(0, None)``.
    """
    try:
        if not isinstance(buffer, (bytes, bytearray)):
            buffer = bytes(buffer)
        return decode_at(buffer, 0)
    except Exception as exc:  # noqa: BLE001 - the contract is "never raises": drop one byte
        try:
            empty = len(buffer) == 0
        except TypeError:
            empty = True
        return (0, None) if empty else (1, Rejected("malformed", detail=repr(exc)))


def decode_at(buf: bytes | bytearray, pos: int) -> DecodeResult:
    """``decode(buf[pos:])`` without copying ``buf``. ``buf`` must be bytes or bytearray."""
    n = len(buf)
    if pos >= n:
        return 0, None
    if buf[pos] != _SYNC0 or pos + 1 < n and buf[pos + 1] != SYNC[1]:
        j = buf.find(SYNC, pos + 1)
        if j < 0:
            # keep a last byte that may be the first half of a sync word
            j = n - 1 if buf[n - 1] == _SYNC0 else n
            if j == pos:
                return 0, None
        return j - pos, Rejected("garbage")
    if n - pos < HEADER_SIZE:
        return 0, None
    _sync, version, msg_type, _flags, _res, seq, length, hcrc = _HEAD_FULL.unpack_from(buf, pos)
    if binascii.crc_hqx(buf[pos : pos + 14], 0xFFFF) != hcrc:
        return 1, Rejected("bad_header_crc")
    if length > max_payload(msg_type):
        limit = max_payload(msg_type)
        return 1, Rejected("too_long", seq=seq, msg_type=msg_type,
                           detail=f"payload length {length} (at most {limit} for type 0x{msg_type:02X})")
    end = pos + HEADER_SIZE + length + TRAILER_SIZE
    if n < end:
        # Waiting for the rest. A frame's bytes are contiguous, so if a whole good frame
        # already starts inside the announced length, this header lied (a corrupted
        # length or a fake header): drop up to that frame instead of waiting for bytes
        # that are not coming while good frames pile up behind it.
        j = _complete_frame_inside(buf, pos + 1, n)
        if j >= 0:
            return j - pos, Rejected("truncated", msg_type=msg_type,
                                     detail=f"header announced {length} bytes; a whole frame started after {j - pos}")
        return 0, None
    with memoryview(buf) as mv:
        crc = zlib.crc32(mv[pos : end - TRAILER_SIZE])
        got = int.from_bytes(mv[end - TRAILER_SIZE : end], "little")
        if crc != got:
            return 1, Rejected("bad_crc", seq=seq, msg_type=msg_type)
        size = end - pos
        if version != FRAME_VERSION:
            return size, Rejected("bad_version", seq=seq, msg_type=msg_type, detail=f"frame version {version}")
        entry = _BY_TYPE.get(msg_type)
        if entry is None:
            return size, Rejected("unknown_type", seq=seq, msg_type=msg_type, detail=f"type 0x{msg_type:02X}")
        payload = bytes(mv[pos + HEADER_SIZE : end - TRAILER_SIZE])
    try:
        message = entry[1](payload)
    except (MalformedPayload, ValueError, struct.error, IndexError) as exc:
        return size, Rejected("malformed", seq=seq, msg_type=msg_type, detail=f"{entry[0].__name__}: {exc}")
    return size, Frame(seq, message)


def _crc_ok(buf: bytes | bytearray, start: int, end: int) -> bool:
    with memoryview(buf) as mv:
        return zlib.crc32(mv[start : end - TRAILER_SIZE]) == int.from_bytes(mv[end - TRAILER_SIZE : end], "little")


def _complete_frame_inside(buf: bytes | bytearray, start: int, n: int) -> int:
    """Index of the first whole, CRC-good frame starting at or after ``start``, else -1."""
    j = buf.find(SYNC, start, n)
    while 0 <= j <= n - OVERHEAD:
        _s, _v, mtype, _f, _r, _q, length, hcrc = _HEAD_FULL.unpack_from(buf, j)
        end = j + HEADER_SIZE + length + TRAILER_SIZE
        if (
            end <= n
            and length <= max_payload(mtype)
            and binascii.crc_hqx(buf[j : j + 14], 0xFFFF) == hcrc
            and _crc_ok(buf, j, end)
        ):
            return j
        j = buf.find(SYNC, j + 1, n)
    return -1


# ----------------------------------------------------------------------------- stateful decoder


@dataclass
class DecoderCounters:
    """What a ``Decoder`` has seen. ``resyncs`` counts losses of framing (each run of
    dropped bytes between good frames); ``bytes_discarded`` every byte dropped."""

    frames: int = 0
    bytes_in: int = 0
    bytes_discarded: int = 0
    resyncs: int = 0
    garbage: int = 0
    bad_header_crc: int = 0
    too_long: int = 0
    truncated: int = 0
    bad_crc: int = 0
    bad_version: int = 0
    unknown_type: int = 0
    malformed: int = 0
    seq_gaps: dict[str, int] = field(default_factory=lambda: {"host": 0, "board": 0})
    frames_missed: dict[str, int] = field(default_factory=lambda: {"host": 0, "board": 0})
    seq_restarts: dict[str, int] = field(default_factory=lambda: {"host": 0, "board": 0})

    @property
    def corrupt(self) -> int:
        """Frames lost to corruption: bad header CRC, bad CRC-32, too long or cut short."""
        return self.bad_header_crc + self.bad_crc + self.too_long + self.truncated

    def as_dict(self) -> dict[str, object]:
        d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.__dict__.items()}
        d["corrupt"] = self.corrupt
        return d


class Decoder:
    """Feeds a byte stream through ``decode``; keeps the partial frame and the counters.

    ``feed(data)`` returns the good frames in order; rejected bytes are counted and
    dropped (``rejections`` keeps the intact-but-refused ones, e.g. an unknown type, so a
    board can nack them; it is cleared by ``take_rejections``). Sequence gaps are tracked
    per direction: a frame whose seq is not last+1 (mod 2^32) counts one gap and the
    missing frames; a seq of 0 after other frames counts as a restart of the sender.
    Not thread-safe: one reader feeds it.
    """

    def __init__(self, max_buffer: int = 4 * (MAX_PAYLOAD + OVERHEAD)) -> None:
        self._buf = bytearray()
        self._max_buffer = max_buffer
        self._in_sync = True
        self._last_seq: dict[str, int | None] = {"host": None, "board": None}
        self.counters = DecoderCounters()
        self.rejections: list[Rejected] = []

    def reset(self) -> None:
        """Forget the partial frame and the sequence history (a new connection); keep counters."""
        self._buf.clear()
        self._in_sync = True
        self._last_seq = {"host": None, "board": None}

    def feed(self, data: bytes) -> list[Frame]:
        c = self.counters
        c.bytes_in += len(data)
        buf = self._buf
        buf += data
        frames: list[Frame] = []
        pos = 0
        try:
            while True:
                consumed, result = decode_at(buf, pos)
                if result is None:
                    break
                pos += consumed
                if isinstance(result, Frame):
                    self._in_sync = True
                    c.frames += 1
                    self._track_seq(result)
                    frames.append(result)
                    continue
                c.bytes_discarded += consumed
                setattr(c, result.reason, getattr(c, result.reason) + 1)
                if self._in_sync:
                    c.resyncs += 1
                    self._in_sync = False
                if result.seq is not None and consumed > 1:
                    self.rejections.append(result)
                    del self.rejections[:-64]
        except Exception as exc:  # noqa: BLE001 - never let a codec defect kill the reader
            c.malformed += 1
            c.bytes_discarded += len(buf) - pos
            pos = len(buf)
            self.rejections.append(Rejected("malformed", detail=repr(exc)))
        del buf[:pos]
        if len(buf) > self._max_buffer:  # only with a max_buffer below a whole frame: belt and braces
            c.bytes_discarded += len(buf)
            buf.clear()
        return frames

    def take_rejections(self) -> list[Rejected]:
        out, self.rejections = self.rejections, []
        return out

    def _track_seq(self, frame: Frame) -> None:
        direction = "board" if type(frame.message) in _BOARD_CLASSES else "host"
        last = self._last_seq[direction]
        self._last_seq[direction] = frame.seq
        if last is None:
            return
        expected = (last + 1) % SEQ_MODULO
        if frame.seq == expected:
            return
        c = self.counters
        if frame.seq == 0:
            c.seq_restarts[direction] += 1
            return
        c.seq_gaps[direction] += 1
        missed = (frame.seq - expected) % SEQ_MODULO
        if missed < SEQ_MODULO // 2:
            c.frames_missed[direction] += missed


_BOARD_CLASSES = frozenset(cls for cls, (t, _p, _u) in _BY_CLASS.items() if direction_of(t) == "board")


def next_seq(seq: int) -> int:
    """The sequence number after ``seq`` (wrapping at 2^32)."""
    return (seq + 1) % SEQ_MODULO


__all__ = [
    "SYNC",
    "FRAME_VERSION",
    "HEADER_SIZE",
    "MAX_PAYLOAD",
    "MAX_PAYLOAD_BY_TYPE",
    "max_payload",
    "CAPS_FLAG_SIMULATED",
    "CAPS_FLAG_CONFIG_TOKEN",
    "MsgType",
    "Frame",
    "Rejected",
    "REJECT_REASONS",
    "Decoder",
    "DecoderCounters",
    "decode",
    "decode_at",
    "encode",
    "type_id",
    "direction_of",
    "header_crc",
    "frame_crc",
    "next_seq",
    "MESSAGE_TYPES",
    "PROTOCOL_VERSION",
]
