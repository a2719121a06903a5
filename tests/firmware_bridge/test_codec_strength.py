"""The codec's promises in detail: what ``encode`` says when a value does not fit, what a
``Rejected`` carries for each malformed payload, what ``decode`` does with odd input, and
what a ``Decoder`` counts and keeps (bytes in, rejections, its buffer bound, a defect in an
unpacker, sequence gaps and restarts).

Explicit examples only: these run for every mutant of ``make mutation``.
"""

from __future__ import annotations

import binascii
import dataclasses
import struct
import zlib

import numpy as np
import pytest

from firmware_bridge import codec
from firmware_bridge.codec import Decoder, Frame, MsgType, Rejected, decode, encode
from firmware_bridge.messages import (
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
    ImpedanceResult,
    Nack,
    NackReason,
    Output,
    SimControl,
    StimEpoch,
    StimMode,
    Stimulate,
)

HEAD = struct.Struct("<2sBBBBII")


def raw(msg_type: int, payload: bytes, *, seq: int = 5, length: int | None = None) -> bytes:
    """A frame with good CRCs around any payload (``length`` may lie)."""
    head = HEAD.pack(codec.SYNC, codec.FRAME_VERSION, msg_type, 0, 0, seq, len(payload) if length is None else length)
    head += binascii.crc_hqx(head, 0xFFFF).to_bytes(2, "little")
    return head + payload + zlib.crc32(head + payload).to_bytes(4, "little")


# ----------------------------------------------------------------------------- encode: values that do not fit

EPOCH = StimEpoch(
    board_time_us=1, stim_counter=2, output=Output.PROBE, set_current_uA=3, delivered_current_uA=4,
    pulse_width_us=5, sample_rate_hz=6, pre_samples=1, nv_per_count=7, samples=np.zeros((1, 2), np.int32),
    config_token=8,
)
BLOCK = EmgBlock(board_time_us=1, first_sample=2, sample_rate_hz=3, nv_per_count=4, samples=np.zeros((1, 2), np.int32))
CAPS = Capabilities(protocol_version=1, firmware_version="fw", board_id="id")
IMPEDANCE = ImpedanceResult(board_time_us=1, impedances_ohm=((Electrode.L_POS, 100),))

# (message, field, bits, the largest value round-trips): every unsigned field of every message
UINT_FIELDS = [
    (Hello(), "protocol_version", 16, True),
    *[(ConfigureAcquisition(), f, b, True) for f, b in [
        ("sample_rate_hz", 32), ("channel_mask", 8), ("gain", 16), ("stream_block_samples", 16),
        ("stream_decimation", 16), ("epoch_pre_ms", 16), ("epoch_post_ms", 16)]],
    *[(Stimulate(Output.PROBE, StimMode.SINGLE, config_token=1), f, b, rt) for f, b, rt in [
        ("output", 8, False), ("mode", 8, False), ("pulse_width_us", 16, True), ("current_uA", 32, True),
        ("rate_mHz", 32, True), ("config_token", 32, True)]],
    (HostHeartbeat(), "counter", 32, True),
    *[(CAPS, f, b, True) for f, b in [
        ("protocol_version", 16), ("channels", 8), ("max_current_uA", 32), ("min_pulse_width_us", 16),
        ("max_pulse_width_us", 16), ("min_rate_mHz", 32), ("max_rate_mHz", 32)]],
    *[(EPOCH, f, b, rt) for f, b, rt in [
        ("board_time_us", 64, True), ("stim_counter", 32, True), ("output", 8, False), ("pulse_width_us", 16, True),
        ("set_current_uA", 32, True), ("sample_rate_hz", 32, True), ("nv_per_count", 32, True),
        ("config_token", 32, True)]],
    *[(BLOCK, f, b, True) for f, b in [
        ("board_time_us", 64), ("first_sample", 64), ("sample_rate_hz", 32), ("nv_per_count", 32)]],
    (IMPEDANCE, "board_time_us", 64, True),
    *[(BoardStatus(board_time_us=1, faults=Fault.NONE), f, b, True) for f, b in [
        ("board_time_us", 64), ("faults", 32), ("host_heartbeat_age_ms", 32), ("uptime_s", 32)]],
    *[(BoardHeartbeat(board_time_us=1), f, b, True) for f, b in [("board_time_us", 64), ("counter", 32)]],
    (Ack(seq=1), "seq", 32, True),
    (Nack(seq=1, reason=NackReason.BUSY), "seq", 32, True),
    (Nack(seq=1, reason=NackReason.BUSY), "reason", 8, False),
]


def _uint_refusal(cls: str, name: str, value: int, bits: int) -> str:
    return f"{cls}.{name}={value} does not fit the wire field (uint{bits}: 0..{(1 << bits) - 1})"


@pytest.mark.parametrize("message, name, bits, round_trips", UINT_FIELDS,
                         ids=[f"{type(m).__name__}.{f}" for m, f, _b, _r in UINT_FIELDS])
def test_encode_names_the_class_the_field_and_the_range_of_a_value_that_does_not_fit(message, name, bits, round_trips):
    cls = type(message).__name__
    for bad in (1 << bits, -1):
        with pytest.raises(ValueError) as info:
            encode(dataclasses.replace(message, **{name: bad}), 0)
        assert str(info.value) == _uint_refusal(cls, name, bad, bits)
    top = dataclasses.replace(message, **{name: (1 << bits) - 1})
    if round_trips:
        _n, frame = decode(encode(top, 0))
        assert isinstance(frame, Frame) and getattr(frame.message, name) == (1 << bits) - 1
    else:  # the largest value fits the wire (the receiver refuses it as an unknown enum member)
        assert decode(encode(top, 0))[1].reason == "malformed"


@pytest.mark.parametrize("message, text", [
    (BoardStatus(board_time_us=1, faults=Fault.NONE, stimulating=(8,)),
     _uint_refusal("BoardStatus", "stimulating", 8, 3)),
    (dataclasses.replace(IMPEDANCE, impedances_ohm=((256, 5),)), _uint_refusal("ImpedanceResult", "electrode", 256, 8)),
    (dataclasses.replace(IMPEDANCE, impedances_ohm=((Electrode.GROUND, 1 << 31),)),
     "ImpedanceResult.impedances_ohm=2147483648 does not fit the wire field (int32: -2147483648..2147483647)"),
    (dataclasses.replace(CAPS, sample_rates_hz=(1 << 32,)),
     _uint_refusal("Capabilities", "sample_rates_hz", 1 << 32, 32)),
    (dataclasses.replace(CAPS, outputs=(256,)), _uint_refusal("Capabilities", "outputs", 256, 8)),
    (dataclasses.replace(EPOCH, delivered_current_uA=-(1 << 31) - 1),
     "StimEpoch.delivered_current_uA=-2147483649 does not fit the wire field (int32: -2147483648..2147483647)"),
    (dataclasses.replace(IMPEDANCE, impedances_ohm=tuple((i, 1) for i in range(256))),
     "ImpedanceResult: at most 255 electrodes"),
    (dataclasses.replace(CAPS, outputs=(0,) * 256), "Capabilities: at most 255 sample rates and 255 outputs"),
    (dataclasses.replace(CAPS, sample_rates_hz=(20000,) * 256),
     "Capabilities: at most 255 sample rates and 255 outputs"),
    (dataclasses.replace(EPOCH, delivered_current_uA=1.5),  # type: ignore[arg-type]
     "StimEpoch.delivered_current_uA=1.5 does not fit the wire field (int32: -2147483648..2147483647)"),
    (dataclasses.replace(EPOCH, delivered_current_uA=True),  # a bool is no current
     "StimEpoch.delivered_current_uA=True does not fit the wire field (int32: -2147483648..2147483647)"),
    (dataclasses.replace(EPOCH, pre_samples=1 << 32), _uint_refusal("StimEpoch", "pre_samples", 1 << 32, 32)),
    (dataclasses.replace(EPOCH, pre_samples=3), "StimEpoch.pre_samples=3 is beyond the 2 samples of the epoch"),
    (dataclasses.replace(BLOCK, samples=np.zeros(3, np.int32)),
     "EmgBlock.samples must have shape (channels, n) (got shape (3,))"),
    (dataclasses.replace(BLOCK, samples=np.zeros((256, 1), np.int32)),
     "EmgBlock.samples has 256 channels; the wire allows 1..255"),
    (dataclasses.replace(BLOCK, samples=np.zeros((0, 3), np.int32)),
     "EmgBlock.samples has 0 channels; the wire allows 1..255"),
    (dataclasses.replace(BLOCK, samples=np.zeros((1, 3), np.float32)),
     "EmgBlock.samples must be integer ADC counts (got dtype float32)"),
    (dataclasses.replace(BLOCK, samples=np.array([[1 << 31]], np.uint32)),
     "EmgBlock.samples exceed the int32 range of the wire"),
    (dataclasses.replace(BLOCK, samples=np.array([[1 << 31]], np.int64)),
     "EmgBlock.samples exceed the int32 range of the wire"),
    (dataclasses.replace(EPOCH, samples=np.array([[-(1 << 31) - 1, 0]], np.int64)),
     "StimEpoch.samples exceed the int32 range of the wire"),
    (SimControl(command="x" * 256), "SimControl.command is 256 bytes of UTF-8; the wire allows 255"),
    (SimControl(command="go", args_json="x" * 65536),
     "SimControl.args_json is 65536 bytes of UTF-8; the wire allows 65535"),
    (SimControl(command=3), "SimControl.command must be a str (got int)"),  # type: ignore[arg-type]
    (SimControl(command="go", args_json=None), "SimControl.args_json must be a str (got NoneType)"),  # type: ignore[arg-type]
    (Hello(host_name="é" * 128), "Hello.host_name is 256 bytes of UTF-8; the wire allows 255"),
    (Nack(seq=1, reason=NackReason.BUSY, detail="d" * 256), "Nack.detail is 256 bytes of UTF-8; the wire allows 255"),
    (dataclasses.replace(CAPS, firmware_version="f" * 256),
     "Capabilities.firmware_version is 256 bytes of UTF-8; the wire allows 255"),
    (dataclasses.replace(CAPS, board_id="b" * 256), "Capabilities.board_id is 256 bytes of UTF-8; the wire allows 255"),
])
def test_encode_refuses_what_the_wire_cannot_carry_and_says_what(message, text):
    with pytest.raises(ValueError) as info:
        encode(message, 0)
    assert str(info.value) == text


def test_the_longest_lists_and_strings_the_wire_allows_round_trip():
    electrodes = dataclasses.replace(IMPEDANCE, impedances_ohm=tuple((Electrode.GROUND, i) for i in range(255)))
    assert decode(encode(electrodes, 0))[1].message == electrodes
    sim = SimControl(command="c" * 255, args_json="a" * 65535)
    assert decode(encode(sim, 0))[1].message == sim
    status = BoardStatus(board_time_us=1, faults=Fault.NONE, stimulating=(Output.PROBE, Output.APS))
    assert decode(encode(status, 0))[1].message == status
    caps = dataclasses.replace(CAPS, sample_rates_hz=tuple(range(255)), outputs=(Output.APS,) * 255)
    assert decode(encode(caps, 0))[1].message == caps
    epoch = dataclasses.replace(EPOCH, pre_samples=2)  # the stimulus at the end of the epoch
    assert decode(encode(epoch, 0))[1].message == epoch


def test_a_bool_in_an_unsigned_field_is_carried_as_0_or_1():
    _n, frame = decode(encode(ConfigureAcquisition(channel_mask=True, gain=False), 0))  # type: ignore[arg-type]
    assert (frame.message.channel_mask, frame.message.gain) == (1, 0)


def test_encode_refuses_a_sequence_number_or_an_object_it_cannot_carry_and_says_what():
    for seq in (1 << 32, -1, True):
        with pytest.raises(ValueError) as info:
            encode(Ack(seq=1), seq)
        assert str(info.value) == f"sequence number {seq!r} outside 0..4294967295"
    with pytest.raises(TypeError) as type_info:
        encode("Ack", 0)
    assert str(type_info.value) == "cannot encode str: not a Board API message"


def test_a_payload_of_exactly_the_protocol_s_maximum_is_sent_and_one_int32_more_is_refused():
    n = (codec.MAX_PAYLOAD - 32) // 4  # an EmgBlock's payload: a 32-byte header and the samples
    block = dataclasses.replace(BLOCK, samples=np.ones((1, n), np.int32))
    frame = encode(block, 0)
    assert len(frame) == codec.OVERHEAD + codec.MAX_PAYLOAD
    assert decode(frame)[1].message == block
    with pytest.raises(ValueError) as info:
        encode(dataclasses.replace(BLOCK, samples=np.ones((1, n + 1), np.int32)), 0)
    limit = codec.MAX_PAYLOAD
    assert str(info.value) == f"EmgBlock payload is {limit + 4} bytes; the protocol allows {limit}"


def test_encode_puts_the_low_8_bits_of_flags_in_byte_4_and_the_receiver_ignores_them():
    for flags, byte in ((0x01, 0x01), (0x1FF, 0xFF)):
        frame = encode(Ack(seq=1), 3, flags=flags)
        assert frame[4] == byte
        assert decode(frame) == (len(frame), Frame(3, Ack(seq=1)))


@pytest.mark.parametrize("samples", [
    np.array([[-(1 << 31), (1 << 31) - 1]], np.int64),  # the ends of the int32 range, from wider integers
    np.array([[0, (1 << 31) - 1]], np.uint32),
    np.array([[0, 65535]], np.uint16),
    np.zeros((255, 1), np.int32),  # the most channels the wire allows
    np.zeros((1, 0), np.int32),  # no samples at all
])
def test_integer_samples_that_fit_int32_are_carried_exactly(samples):
    block = dataclasses.replace(BLOCK, samples=samples)
    _n, frame = decode(encode(block, 0))
    np.testing.assert_array_equal(frame.message.samples, samples)


# ----------------------------------------------------------------------------- decode: what a malformed frame says

_EP = struct.Struct("<QIBBHIiIIII")


def _epoch_payload(
    *, output: int = 0, channels: int = 1, pre: int = 0, n: int = 2, samples: int | None = None
) -> bytes:
    head = _EP.pack(1, 2, output, channels, 100, 1000, 990, 20000, pre, 100, n)
    return head + b"\x00" * (4 * channels * n if samples is None else samples)


_CAPS_HEAD = struct.Struct("<HBBIHHII").pack(1, 2, 0, 10000, 50, 250, 500, 30000)

MALFORMED = [
    (MsgType.HELLO, b"\x01\x00", "Hello: Hello payload too short"),
    (MsgType.HELLO, b"\x01\x00\x05ab", "Hello: string past the end of the payload"),
    (MsgType.HELLO, b"\x01\x00\x01\xff", "Hello: string is not UTF-8 (invalid start byte)"),
    (MsgType.HELLO, b"\x01\x00\x01ab", "Hello: payload is 5 bytes, expected 4"),
    (MsgType.CONFIGURE_ACQUISITION, struct.pack("<IBBHHHHH", 20000, 3, 2, 1, 400, 1, 10, 50),
     "ConfigureAcquisition: stream_enabled must be 0 or 1 (got 2)"),
    (MsgType.STIMULATE, b"\x00" * 5, "Stimulate: payload is 5 bytes, expected 12 or 16"),
    (MsgType.STIMULATE, bytes([0, 9]) + b"\x00" * 10, "Stimulate: unknown stimulation mode 9"),
    (MsgType.STIMULATE, bytes([2, 1]) + b"\x00" * 10, "Stimulate: unknown output 2"),
    (MsgType.SIM_CONTROL, b"", "SimControl: string length past the end of the payload"),
    (MsgType.SIM_CONTROL, b"\x01g\x01", "SimControl: string length past the end of the payload"),
    (MsgType.CAPABILITIES, _CAPS_HEAD, "Capabilities: Capabilities payload too short"),
    (MsgType.CAPABILITIES, _CAPS_HEAD + b"\x02" + b"\x00" * 8,
     "Capabilities: sample rate list past the end of the payload"),
    (MsgType.CAPABILITIES, _CAPS_HEAD + b"\x00\x03\x00", "Capabilities: output list past the end of the payload"),
    (MsgType.CAPABILITIES, _CAPS_HEAD + b"\x00", "Capabilities: sample rate list past the end of the payload"),
    (MsgType.CAPABILITIES, _CAPS_HEAD + b"\x01" + b"\x00" * 4,
     "Capabilities: sample rate list past the end of the payload"),
    (MsgType.CAPABILITIES, _CAPS_HEAD + b"\x01" + b"\x00" * 5,
     "Capabilities: string length past the end of the payload"),
    (MsgType.CAPABILITIES, _CAPS_HEAD + b"\x00\x01\x00", "Capabilities: string length past the end of the payload"),
    (MsgType.CAPABILITIES, _CAPS_HEAD + b"\x00\x01\x07\x00\x00", "Capabilities: unknown output 7"),
    (MsgType.STIM_EPOCH, _epoch_payload()[:39], "StimEpoch: StimEpoch payload too short"),
    (MsgType.STIM_EPOCH, _epoch_payload(pre=3, n=2), "StimEpoch: pre_samples 3 beyond the 2 samples of the epoch"),
    (MsgType.STIM_EPOCH, _epoch_payload(output=7), "StimEpoch: unknown output 7"),
    (MsgType.STIM_EPOCH, _epoch_payload(channels=0), "StimEpoch: zero channels"),
    (MsgType.STIM_EPOCH, _epoch_payload(samples=6),
     "StimEpoch: sample block is 6 bytes, expected 8 (1 x 2 int32)"),
    (MsgType.EMG_BLOCK, b"\x00" * 31, "EmgBlock: EmgBlock payload too short"),
    (MsgType.IMPEDANCE_RESULT, b"\x00" * 8, "ImpedanceResult: ImpedanceResult payload too short"),
    (MsgType.IMPEDANCE_RESULT, b"\x00" * 8 + b"\x01" + struct.pack("<Bi", 9, 100),
     "ImpedanceResult: unknown electrode 9"),
    (MsgType.IMPEDANCE_RESULT, b"\x00" * 8 + b"\x02" + struct.pack("<Bi", 1, 100),
     "ImpedanceResult: payload is 14 bytes, expected 19"),
    (MsgType.BOARD_STATUS, struct.pack("<QIB3xII", 1, 0, 0b100, 0, 0), "BoardStatus: unknown output 2"),
    (MsgType.BOARD_STATUS, b"\x00" * 23, "BoardStatus: payload is 23 bytes, expected 24"),
    (MsgType.ACK, b"\x00" * 3, "Ack: payload is 3 bytes, expected 4"),
    (MsgType.NACK, b"\x00" * 5, "Nack: Nack payload too short"),
    (MsgType.NACK, b"\x00" * 4 + b"\x00\x00", "Nack: unknown nack reason 0"),
]


@pytest.mark.parametrize("msg_type, payload, detail", MALFORMED, ids=[d for _t, _p, d in MALFORMED])
def test_a_malformed_payload_is_dropped_whole_with_a_detail_naming_the_message_and_the_fault(msg_type, payload, detail):
    frame = raw(msg_type, payload, seq=77)
    assert decode(frame) == (len(frame), Rejected("malformed", seq=77, msg_type=msg_type, detail=detail))


def test_a_stim_epoch_with_a_token_and_its_samples_decodes():
    payload = _epoch_payload()
    token = payload[:40] + (99).to_bytes(4, "little") + payload[40:]
    _n, frame = decode(raw(MsgType.STIM_EPOCH, token))
    assert frame.message.config_token == 99 and frame.message.samples.shape == (1, 2)


# ----------------------------------------------------------------------------- decode: odd input


def test_decode_copies_a_memoryview_so_that_garbage_in_it_is_found_as_in_bytes():
    frame = encode(Ack(seq=1), 2)
    view = memoryview(b"\x00\x01" + frame)
    assert decode(view) == (2, Rejected("garbage"))
    assert decode(view[2:]) == (len(frame), Frame(2, Ack(seq=1)))


def test_decode_never_raises_on_what_is_not_bytes():
    # something with a length that is not bytes: one unit dropped, and the rejection says why
    consumed, result = decode("abc")  # type: ignore[arg-type]
    assert consumed == 1 and isinstance(result, Rejected)
    assert (result.reason, result.seq, result.msg_type) == ("malformed", None, None)
    assert result.detail.startswith("TypeError(")
    # nothing to drop: empty, or without a length at all
    assert decode("") == (0, None)  # type: ignore[arg-type]
    assert decode(None) == (0, None)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- the look-ahead past a lying header


def test_a_lying_header_gives_way_to_the_first_whole_frame_past_a_false_sync_word():
    liar = raw(MsgType.EMG_BLOCK, b"", length=500)[: codec.HEADER_SIZE]
    false_sync = codec.SYNC + b"\x01\x02\x03"
    first, second = encode(BoardHeartbeat(board_time_us=1), 1), encode(BoardHeartbeat(board_time_us=2), 2)
    consumed, result = decode(liar + false_sync + first + second)
    assert consumed == codec.HEADER_SIZE + len(false_sync)
    assert isinstance(result, Rejected) and result.reason == "truncated"


# ----------------------------------------------------------------------------- the Decoder's counters and lists


def test_bytes_in_counts_every_byte_fed_over_all_calls():
    dec = Decoder()
    frame = encode(Ack(seq=1), 0)
    dec.feed(frame)
    dec.feed(b"\x00\x01")
    dec.feed(frame[:5])
    assert dec.counters.bytes_in == len(frame) + 2 + 5


def test_only_intact_refused_frames_are_kept_for_a_nack():
    dec = Decoder()
    bad_crc = bytearray(encode(Ack(seq=1), 3))
    bad_crc[-1] ^= 0xFF
    too_long = raw(MsgType.ACK, b"", seq=4, length=257)[: codec.HEADER_SIZE]
    unknown = raw(0x3E, b"abc", seq=6)
    good = encode(Ack(seq=1), 7)
    frames = dec.feed(bytes(bad_crc) + too_long + b"\x00\x00" + unknown + good)
    assert frames == [Frame(7, Ack(seq=1))]
    c = dec.counters
    assert (c.bad_crc, c.too_long, c.garbage, c.unknown_type) == (1, 1, 2, 1)  # each drops one byte, garbage the rest
    assert c.bytes_discarded == len(bad_crc) + len(too_long) + 2 + len(unknown)
    # the bad CRC-32 and the too-long header cost one byte each and name a seq, but only the
    # whole intact frame of an unknown type is kept for the board to nack
    assert dec.take_rejections() == [Rejected("unknown_type", seq=6, msg_type=0x3E, detail="type 0x3E")]
    assert dec.take_rejections() == []


def test_the_rejections_kept_are_the_latest_64():
    dec = Decoder()
    dec.feed(b"".join(raw(0x3E, b"", seq=s) for s in range(70)))
    assert [r.seq for r in dec.rejections] == list(range(6, 70))
    assert dec.counters.unknown_type == 70


def test_a_defect_in_an_unpacker_drops_the_rest_of_the_buffer_and_says_so(monkeypatch):
    def broken(_payload: bytes) -> object:
        raise RuntimeError("boom")

    dec = Decoder()
    bad = raw(MsgType.ACK, b"\x00", seq=1)  # malformed: an Ack is 4 bytes
    dec.feed(b"\x00\x00" + bad)
    c = dec.counters
    assert (c.malformed, c.bytes_discarded) == (1, 2 + len(bad))
    monkeypatch.setitem(codec._BY_TYPE, MsgType.ACK, (Ack, broken))
    beat = encode(BoardHeartbeat(board_time_us=1), 0)
    ack = encode(Ack(seq=1), 1)
    tail = encode(BoardHeartbeat(board_time_us=2), 1)
    # the frame before the defect still comes out; the defect and all behind it are dropped
    assert dec.feed(beat + ack + tail) == [Frame(0, BoardHeartbeat(board_time_us=1))]
    assert c.malformed == 2
    assert c.bytes_discarded == 2 + len(bad) + len(ack) + len(tail)
    assert dec.rejections[-1] == Rejected("malformed", detail="RuntimeError('boom')")
    # nothing is left over: the next frame comes out alone
    assert dec.feed(tail) == [Frame(1, BoardHeartbeat(board_time_us=2))]
    assert c.bytes_discarded == 2 + len(bad) + len(ack) + len(tail)


def test_a_partial_frame_may_fill_the_buffer_to_its_bound_but_not_beyond():
    block = encode(EmgBlock(board_time_us=1, first_sample=0, sample_rate_hz=20000, nv_per_count=100,
                            samples=np.arange(40, dtype=np.int32).reshape(2, 20)), 0)
    dec = Decoder(max_buffer=40)
    assert dec.feed(block[:40]) == []
    assert len(dec.feed(block[40:])) == 1
    assert dec.counters.bytes_discarded == 0
    dec = Decoder(max_buffer=40)
    dec.feed(b"\x00")
    assert dec.feed(block[:41]) == []
    assert dec.counters.bytes_discarded == 1 + 41  # the partial frame is dropped and counted
    assert dec.feed(block[41:]) == []  # its rest is garbage now


def test_a_reset_forgets_the_host_direction_s_sequence_too():
    dec = Decoder()
    assert dec.feed(encode(Hello(), 3)) == [Frame(3, Hello())]
    dec.reset()
    assert dec.feed(encode(Hello(), 9)) == [Frame(9, Hello())]
    c = dec.counters
    assert (c.seq_gaps, c.frames_missed, c.malformed) == ({"host": 0, "board": 0}, {"host": 0, "board": 0}, 0)


def test_gaps_restarts_and_missed_frames_add_up():
    dec = Decoder()
    dec.feed(b"".join(encode(Ack(seq=1), s) for s in (0, 3, 4, 10, 0, 1, 0)))
    c = dec.counters
    assert c.seq_gaps["board"] == 2 and c.frames_missed["board"] == 2 + 5
    assert c.seq_restarts["board"] == 2


def test_a_jump_of_half_the_sequence_space_or_more_is_a_gap_but_no_count_of_missed_frames():
    ahead = Decoder()
    ahead.feed(encode(Ack(seq=1), 0) + encode(Ack(seq=1), 1 << 31))
    assert ahead.counters.seq_gaps["board"] == 1 and ahead.counters.frames_missed["board"] == (1 << 31) - 1
    behind = Decoder()  # 2^31 ahead is as far as 2^31 behind: a stale frame, not lost ones
    behind.feed(encode(Ack(seq=1), 0) + encode(Ack(seq=1), (1 << 31) + 1))
    assert behind.counters.seq_gaps["board"] == 1 and behind.counters.frames_missed["board"] == 0


# ----------------------------------------------------------------------------- decode_at: what each rejection carries


def test_bytes_before_a_sync_word_are_garbage_up_to_it():
    frame = encode(Ack(seq=1), 2)
    for junk in (b"\x00\x5a", b"\xa5\x00", b"\x5a\xa5\x00"):
        assert decode(junk + frame) == (len(junk), Rejected("garbage")), junk
    assert decode(b"\xa5\x00") == (2, Rejected("garbage"))  # too short for a header, but not a sync word
    assert decode(b"\x00\x01") == (2, Rejected("garbage"))
    # a last 0xA5 may be the first half of the next sync word: it is kept
    assert decode(b"\x00\xa5") == (1, Rejected("garbage"))
    assert decode(b"\xa5") == (0, None)


def test_a_frame_with_a_bad_crc_32_names_the_seq_and_type_its_good_header_announced():
    frame = bytearray(encode(Ack(seq=1), 9))
    frame[-1] ^= 0x01
    assert decode(bytes(frame)) == (1, Rejected("bad_crc", seq=9, msg_type=MsgType.ACK))


def test_a_header_announcing_more_than_its_type_allows_says_how_much_and_the_limit():
    head = raw(MsgType.ACK, b"", seq=4, length=257)[: codec.HEADER_SIZE]
    assert decode(head) == (1, Rejected("too_long", seq=4, msg_type=MsgType.ACK,
                                        detail="payload length 257 (at most 256 for type 0x47)"))


def test_a_lying_header_after_other_bytes_drops_only_itself():
    first, inner = encode(Ack(seq=1), 1), encode(BoardHeartbeat(board_time_us=5), 2)
    liar = raw(MsgType.EMG_BLOCK, b"", length=200)[: codec.HEADER_SIZE]
    buf = first + liar + inner
    detail = f"header announced 200 bytes; a whole frame started after {codec.HEADER_SIZE}"
    assert codec.decode_at(buf, len(first)) == (
        codec.HEADER_SIZE, Rejected("truncated", msg_type=MsgType.EMG_BLOCK, detail=detail))
    dec = Decoder()
    assert dec.feed(buf) == [Frame(1, Ack(seq=1)), Frame(2, BoardHeartbeat(board_time_us=5))]
    assert (dec.counters.truncated, dec.counters.bytes_discarded) == (1, codec.HEADER_SIZE)


def test_an_intact_frame_of_another_version_is_dropped_whole_and_named():
    head = HEAD.pack(codec.SYNC, 2, MsgType.ACK, 0, 0, 11, 4)
    head += binascii.crc_hqx(head, 0xFFFF).to_bytes(2, "little")
    frame = head + b"\x01\x00\x00\x00" + zlib.crc32(head + b"\x01\x00\x00\x00").to_bytes(4, "little")
    expected = Rejected("bad_version", seq=11, msg_type=MsgType.ACK, detail="frame version 2")
    assert decode(frame) == (len(frame), expected)
