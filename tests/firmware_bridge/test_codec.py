"""Codec: golden frames, splitting, garbage, bad CRCs, truncation, round trips and fuzz."""

from __future__ import annotations

import random
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge import codec
from firmware_bridge.codec import Decoder, Frame, Rejected, decode, encode
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

# ----------------------------------------------------------------------------- golden frames
# Written out by hand from PROTOCOL.md; the encoder must produce exactly these bytes.

GOLDEN = [
    (
        Hello(),
        0,
        "a55a 01 01 00 00 00000000 06000000 42d4" "0100 03 6c6e6d" "c12b3463",
    ),
    (
        Stimulate(Output.PROBE, StimMode.CONTINUOUS, current_uA=1000, pulse_width_us=100, rate_mHz=4000),
        7,
        "a55a 01 03 00 00 07000000 0c000000 42db" "00 02 6400 e8030000 a00f0000" "451dba6a",
    ),
    (Ack(seq=7), 3, "a55a 01 47 00 00 03000000 04000000 7e44" "07000000" "9d178d90"),
    (
        Nack(seq=8, reason=NackReason.OUT_OF_RANGE, detail="current"),
        4,
        "a55a 01 48 00 00 04000000 0d000000 22fb" "08000000 03 07 63757272656e74" "871ee09a",
    ),
    (
        EmgBlock(
            board_time_us=1000,
            first_sample=20,
            sample_rate_hz=20000,
            nv_per_count=100,
            samples=np.array([[1, -1, 256], [-2, 70000, 0]], dtype=np.int32),
        ),
        9,
        "a55a 01 43 00 00 09000000 38000000 9ee7"
        "e803000000000000 1400000000000000 204e0000 64000000 02 000000 03000000"
        "01000000 ffffffff 00010000 feffffff 70110100 00000000"
        "97bde7f0",
    ),
    (
        HostHeartbeat(counter=12, alarm_active=True),
        13,
        "a55a 01 05 00 00 0d000000 05000000 bd48" "0c000000 01" "df156845",
    ),
]


def _hex(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", ""))


def _crc16_ccitt_false(data: bytes) -> int:
    """Bit-by-bit reference, independent of binascii."""
    crc = 0xFFFF
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def test_crc_check_values():
    assert codec.header_crc(b"123456789") == 0x29B1 == _crc16_ccitt_false(b"123456789")
    assert codec.frame_crc(b"123456789") == 0xCBF43926


@pytest.mark.parametrize("message,seq,hexframe", GOLDEN, ids=[type(g[0]).__name__ for g in GOLDEN])
def test_golden_frame_layout(message, seq, hexframe):
    frame = _hex(hexframe)
    # header fields where PROTOCOL.md puts them
    sync, version, mtype, flags, _res, fseq, length, hcrc = struct.unpack_from("<2sBBBBIIH", frame)
    assert sync == b"\xa5\x5a" and version == 1 and flags == 0 and fseq == seq
    assert mtype == codec.type_id(message)
    assert length == len(frame) - 20
    assert hcrc == _crc16_ccitt_false(frame[:14])
    assert int.from_bytes(frame[-4:], "little") == zlib.crc32(frame[:-4])
    assert encode(message, seq) == frame


@pytest.mark.parametrize("message,seq,hexframe", GOLDEN, ids=[type(g[0]).__name__ for g in GOLDEN])
def test_golden_frame_decodes_whole_halves_and_bytewise(message, seq, hexframe):
    frame = _hex(hexframe)
    assert decode(frame) == (len(frame), Frame(seq, message))
    for split in (1, len(frame) // 2, len(frame) - 1):
        assert decode(frame[:split]) == (0, None)  # incomplete: wait for more
        d = Decoder()
        assert d.feed(frame[:split]) == []
        assert d.feed(frame[split:]) == [Frame(seq, message)]
    d = Decoder()
    got = []
    for i in range(len(frame)):
        got += d.feed(frame[i : i + 1])
    assert got == [Frame(seq, message)]
    assert d.counters.frames == 1 and d.counters.bytes_discarded == 0 and d.counters.resyncs == 0


def _all_golden() -> tuple[bytes, list[Frame]]:
    data = b"".join(_hex(h) for _m, _s, h in GOLDEN)
    return data, [Frame(s, m) for m, s, _h in GOLDEN]


def test_stream_of_frames_in_random_chunks():
    data, expected = _all_golden()
    rng = random.Random(1)
    for _ in range(50):
        d = Decoder()
        got, i = [], 0
        while i < len(data):
            k = rng.randint(1, 40)
            got += d.feed(data[i : i + k])
            i += k
        assert got == expected


@pytest.mark.parametrize(
    "garbage",
    [b"\x00", b"\xa5", b"\x5a\xa5", b"\xa5\xa5\x5a", b"hello world" * 10, bytes(range(256)), b"\xa5\x5a" * 9],
)
def test_garbage_before_between_and_after(garbage):
    data, expected = _all_golden()
    frames = [_hex(h) for _m, _s, h in GOLDEN]
    stream = garbage + garbage.join(frames) + garbage
    d = Decoder()
    got = d.feed(stream)
    # a trailing lone sync byte may be held back, never mistaken for a frame
    assert got == expected
    assert d.counters.frames == len(expected)
    assert d.counters.bytes_discarded >= len(garbage) * len(frames) - 1
    assert d.counters.resyncs >= 1


def test_garbage_inside_a_frame_loses_only_that_frame():
    frames = [_hex(h) for _m, _s, h in GOLDEN]
    victim = frames[2]
    broken = victim[:10] + b"\x00\x13\x37" + victim[10:]
    stream = frames[0] + frames[1] + broken + b"".join(frames[3:])
    d = Decoder()
    got = d.feed(stream)
    expected = [Frame(s, m) for i, (m, s, _h) in enumerate(GOLDEN) if i != 2]
    assert got == expected
    assert d.counters.bad_header_crc + d.counters.bad_crc >= 1


def test_bad_header_crc_is_rejected_then_resyncs():
    frame = _hex(GOLDEN[0][2])
    bad = bytearray(frame)
    bad[10] ^= 0x01  # corrupt the length: must never be trusted
    n, result = decode(bytes(bad))
    assert n == 1 and result == Rejected("bad_header_crc")
    d = Decoder()
    assert d.feed(bytes(bad) + frame) == [Frame(0, Hello())]
    assert d.counters.bad_header_crc == 1 and d.counters.frames == 1


def test_corrupted_length_never_stalls_the_stream():
    # a header whose length says 100 kB but whose header CRC is wrong must not make the
    # decoder wait for 100 kB: the next frame comes out at once
    frame = _hex(GOLDEN[2][2])
    bad = bytearray(frame)
    bad[10:14] = (100_000).to_bytes(4, "little")
    d = Decoder()
    assert d.feed(bytes(bad) + frame) == [Frame(3, Ack(7))]


@pytest.mark.parametrize("where", ["payload", "crc"])
def test_bad_payload_crc(where):
    frame = bytearray(_hex(GOLDEN[1][2]))
    frame[18 if where == "payload" else -1] ^= 0x80
    n, result = decode(bytes(frame))
    assert n == 1 and isinstance(result, Rejected) and result.reason == "bad_crc"
    d = Decoder()
    good = _hex(GOLDEN[0][2])
    assert d.feed(bytes(frame) + good) == [Frame(0, Hello())]
    assert d.counters.bad_crc == 1 and d.counters.corrupt == 1


def test_too_long_with_valid_header_crc():
    head = struct.pack("<2sBBBBII", b"\xa5\x5a", 1, 0x41, 0, 0, 1, codec.MAX_PAYLOAD + 1)
    head += codec.header_crc(head).to_bytes(2, "little")
    n, result = decode(head)
    assert n == 1 and result.reason == "too_long"


def _raw_frame(mtype: int, payload: bytes, seq: int = 1, version: int = 1) -> bytes:
    head = struct.pack("<2sBBBBII", b"\xa5\x5a", version, mtype, 0, 0, seq, len(payload))
    head += codec.header_crc(head).to_bytes(2, "little")
    return head + payload + zlib.crc32(head + payload).to_bytes(4, "little")


def test_unknown_type_malformed_and_bad_version_drop_whole_frame_with_seq():
    unknown = _raw_frame(0x3E, b"abc", seq=42)
    n, r = decode(unknown)
    assert n == len(unknown) and r.reason == "unknown_type" and r.seq == 42 and r.msg_type == 0x3E
    malformed = _raw_frame(codec.MsgType.STIMULATE, b"\x00" * 5, seq=43)  # 12 bytes expected
    n, r = decode(malformed)
    assert n == len(malformed) and r.reason == "malformed" and r.seq == 43
    bad_enum = _raw_frame(codec.MsgType.STIMULATE, bytes([9, 1]) + b"\x00" * 10, seq=44)
    assert decode(bad_enum)[1].reason == "malformed"
    other_version = _raw_frame(codec.MsgType.ACK, b"\x00" * 4, version=2)
    n, r = decode(other_version)
    assert n == len(other_version) and r.reason == "bad_version"
    d = Decoder()
    good = _hex(GOLDEN[0][2])
    assert d.feed(unknown + malformed + good + other_version) == [Frame(0, Hello())]
    c = d.counters
    assert (c.unknown_type, c.malformed, c.bad_version, c.frames) == (1, 1, 1, 1)
    # intact-but-refused frames are kept so that a board can nack them
    assert [(r.reason, r.seq) for r in d.take_rejections()] == [
        ("unknown_type", 42), ("malformed", 43), ("bad_version", 1)]


def test_truncated_frames_wait_then_resync():
    frame = _hex(GOLDEN[4][2])
    for cut in range(1, len(frame)):
        assert decode(frame[:cut]) == (0, None)
    # a truncated frame followed by a good one: the good one survives
    d = Decoder()
    good = _hex(GOLDEN[0][2])
    got = d.feed(frame[:30] + good + good)
    assert Frame(0, Hello()) in got


def test_sequence_gaps_per_direction():
    d = Decoder()
    stream = (
        encode(Ack(1), 0)
        + encode(Ack(1), 1)
        + encode(Ack(1), 5)  # 3 board frames missed
        + encode(Hello(), 10)
        + encode(Hello(), 11)
        + encode(Ack(1), 6)
        + encode(Ack(1), 0)  # board restarted
    )
    assert len(d.feed(stream)) == 7
    c = d.counters
    assert c.seq_gaps == {"host": 0, "board": 1}
    assert c.frames_missed == {"host": 0, "board": 3}
    assert c.seq_restarts["board"] == 1


def test_sequence_wraps_without_a_gap():
    d = Decoder()
    d.feed(encode(Ack(0), 2**32 - 2) + encode(Ack(0), 2**32 - 1) + encode(Ack(0), 0) + encode(Ack(0), 1))
    # 0 after 2^32-1 is the expected successor: neither a gap nor a restart
    assert d.counters.seq_gaps["board"] == 0 and d.counters.seq_restarts["board"] == 0


def test_encode_refuses_values_that_do_not_fit():
    with pytest.raises(ValueError, match="current_uA"):
        encode(Stimulate(Output.PROBE, StimMode.SINGLE, current_uA=-5), 0)
    with pytest.raises(ValueError, match="sequence"):
        encode(Ack(1), 2**32)
    with pytest.raises(TypeError):
        encode("not a message", 0)
    with pytest.raises(ValueError, match="samples"):
        encode(EmgBlock(0, 0, 20000, 100, np.zeros((2, 4), dtype=np.float64)), 0)
    with pytest.raises(ValueError, match="int32"):
        encode(EmgBlock(0, 0, 20000, 100, np.full((1, 2), 2**40, dtype=np.int64)), 0)
    with pytest.raises(ValueError, match="bytes"):
        encode(EmgBlock(0, 0, 20000, 100, np.zeros((2, codec.MAX_PAYLOAD), dtype=np.int32)), 0)
    with pytest.raises(ValueError, match="pre_samples"):
        encode(StimEpoch(0, 0, Output.PROBE, 1, 1, 100, 20000, 10, 100, np.zeros((2, 5), np.int32)), 0)


def test_decoded_samples_are_owned_native_int32():
    block = EmgBlock(0, 0, 20000, 100, np.arange(-10, 10, dtype=np.int64).reshape(2, 10))
    _n, frame = decode(encode(block, 0))
    s = frame.message.samples
    assert s.dtype == np.int32 and s.shape == (2, 10) and s.flags.writeable and s.flags.owndata
    np.testing.assert_array_equal(s, block.samples)
    np.testing.assert_allclose(frame.message.microvolts(), block.samples * 0.1)


def test_type_ids_distinct_and_in_documented_ranges():
    ids = list(codec.MESSAGE_TYPES.values())
    assert len(ids) == len(set(ids)) == 14
    assert codec.type_id(SimControl) in range(0x70, 0x80)
    for cls in (Hello, ConfigureAcquisition, Stimulate, ImpedanceRequest, HostHeartbeat):
        assert codec.direction_of(codec.type_id(cls)) == "host"
    for cls in (Capabilities, StimEpoch, EmgBlock, ImpedanceResult, BoardStatus, BoardHeartbeat, Ack, Nack):
        assert codec.direction_of(codec.type_id(cls)) == "board"


def test_decode_accepts_memoryview_and_never_raises_on_odd_input():
    frame = _hex(GOLDEN[0][2])
    assert decode(memoryview(frame))[1] == Frame(0, Hello())
    assert decode(b"") == (0, None)
    assert decode(bytearray(frame)) == (len(frame), Frame(0, Hello()))


# ----------------------------------------------------------------------------- hypothesis

u8 = st.integers(0, 2**8 - 1)
u16 = st.integers(0, 2**16 - 1)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
i32 = st.integers(-(2**31), 2**31 - 1)
text8 = st.text(max_size=40).filter(lambda s: len(s.encode()) < 256)
outputs = st.sampled_from(list(Output))


@st.composite
def sample_arrays(draw, max_n=300):
    channels = draw(st.integers(1, 4))
    n = draw(st.integers(0, max_n))
    seed = draw(st.integers(0, 2**32 - 1))
    kind = draw(st.sampled_from(["full", "small", "extreme"]))
    rng = np.random.default_rng(seed)
    if kind == "full":
        a = rng.integers(-(2**31), 2**31, size=(channels, n), dtype=np.int64)
    elif kind == "small":
        a = rng.integers(-3000, 3000, size=(channels, n))
    else:
        a = rng.choice(np.array([-(2**31), -1, 0, 1, 2**31 - 1]), size=(channels, n))
    return a.astype(np.int32)


@st.composite
def stim_epochs(draw):
    samples = draw(sample_arrays())
    return StimEpoch(
        board_time_us=draw(u64),
        stim_counter=draw(u32),
        output=draw(outputs),
        set_current_uA=draw(u32),
        delivered_current_uA=draw(i32),
        pulse_width_us=draw(u16),
        sample_rate_hz=draw(u32),
        pre_samples=draw(st.integers(0, samples.shape[1])),
        nv_per_count=draw(u32),
        samples=samples,
        config_token=draw(st.none() | u32),
    )


messages = st.one_of(
    st.builds(Hello, protocol_version=u16, host_name=text8),
    st.builds(
        ConfigureAcquisition,
        sample_rate_hz=u32,
        channel_mask=u8,
        gain=u16,
        stream_enabled=st.booleans(),
        stream_block_samples=u16,
        stream_decimation=u16,
        epoch_pre_ms=u16,
        epoch_post_ms=u16,
    ),
    st.builds(Stimulate, output=outputs, mode=st.sampled_from(list(StimMode)), current_uA=u32, pulse_width_us=u16,
              rate_mHz=u32, config_token=st.none() | u32),
    st.just(ImpedanceRequest()),
    st.builds(HostHeartbeat, counter=u32, alarm_active=st.booleans()),
    st.builds(SimControl, command=text8, args_json=st.text(max_size=300)),
    st.builds(
        Capabilities,
        protocol_version=u16,
        firmware_version=text8,
        board_id=text8,
        channels=u8,
        sample_rates_hz=st.lists(u32, max_size=8).map(tuple),
        max_current_uA=u32,
        min_pulse_width_us=u16,
        max_pulse_width_us=u16,
        min_rate_mHz=u32,
        max_rate_mHz=u32,
        outputs=st.lists(outputs, max_size=4).map(tuple),
        simulated=st.booleans(),
        config_token=st.booleans(),
    ),
    stim_epochs(),
    st.builds(EmgBlock, board_time_us=u64, first_sample=u64, sample_rate_hz=u32, nv_per_count=u32,
              samples=sample_arrays()),
    st.builds(
        ImpedanceResult,
        board_time_us=u64,
        impedances_ohm=st.lists(st.tuples(st.sampled_from(list(Electrode)), i32), max_size=8).map(tuple),
    ),
    st.builds(
        BoardStatus,
        board_time_us=u64,
        faults=st.integers(0, 255).map(Fault),
        stimulating=st.sets(outputs).map(lambda s: tuple(sorted(s))),
        host_heartbeat_age_ms=u32,
        uptime_s=u32,
    ),
    st.builds(BoardHeartbeat, board_time_us=u64, counter=u32),
    st.builds(Ack, seq=u32),
    st.builds(Nack, seq=u32, reason=st.sampled_from(list(NackReason)), detail=text8),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(message=messages, seq=u32)
def test_round_trip_every_message_type(message, seq):
    frame = encode(message, seq)
    n, result = decode(frame)
    assert n == len(frame)
    assert result == Frame(seq, message)
    assert type(result.message) is type(message)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(st.tuples(messages, u32), min_size=1, max_size=6), chunk=st.integers(1, 200),
       junk=st.binary(max_size=30))
def test_round_trip_stream_with_junk_and_chunking(batch, chunk, junk):
    data = junk.join(encode(m, s) for m, s in batch) + junk
    d = Decoder()
    got = []
    for i in range(0, len(data), chunk):
        got += d.feed(data[i : i + chunk])
    # junk can only ever swallow a frame if it forms half a sync word with it; with
    # random junk every frame still comes out (the CRCs stop junk from becoming frames)
    assert got == [Frame(s, m) for m, s in batch]


@settings(max_examples=500)
@given(data=st.binary(max_size=600))
def test_fuzz_random_bytes_never_raise_and_never_make_frames(data):
    n, result = decode(data)
    assert 0 <= n <= len(data)
    assert (n == 0) == (result is None)
    d = Decoder()
    assert d.feed(data) == []
    assert d.counters.frames == 0


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    batch=st.lists(st.tuples(messages, u32), min_size=1, max_size=4),
    mutations=st.lists(st.tuples(st.sampled_from(["flip", "insert", "delete", "dup"]), st.integers(0, 10**6), u8),
                       min_size=1, max_size=8),
)
def test_fuzz_mutated_frames_never_raise_and_never_invent_frames(batch, mutations):
    sent = [encode(m, s) for m, s in batch]
    data = bytearray(b"".join(sent))
    for op, where, value in mutations:
        i = where % (len(data) + 1)
        if op == "flip" and data:
            data[min(i, len(data) - 1)] ^= value or 1
        elif op == "insert":
            data[i:i] = bytes([value])
        elif op == "delete" and data:
            del data[min(i, len(data) - 1)]
        elif op == "dup":
            data[i:i] = data[max(0, i - 20) : i]
    d = Decoder()
    got = d.feed(bytes(data))
    valid = {encode(m, s) for m, s in batch}
    for frame in got:
        assert encode(frame.message, frame.seq) in valid
    # whole-buffer decode stepping never raises and always progresses
    buf, pos = bytes(data), 0
    while True:
        n, r = decode(buf[pos:])
        if r is None:
            break
        assert n > 0
        pos += n


# ----------------------------------------------------------------------------- protocol 1.1: configuration token


def test_stimulate_with_token_appends_a_u32_and_without_is_the_10_form():
    plain = Stimulate(Output.APS, StimMode.CONTINUOUS, current_uA=1000, pulse_width_us=100, rate_mHz=1000)
    tokened = Stimulate(Output.APS, StimMode.CONTINUOUS, current_uA=1000, pulse_width_us=100, rate_mHz=1000,
                        config_token=0x01020304)
    a, b = encode(plain, 5), encode(tokened, 5)
    assert len(a) == 20 + 12 and len(b) == 20 + 16
    assert b[16:28] == a[16:28] and b[28:32] == bytes([4, 3, 2, 1])  # the token after the 1.0 fields
    assert int.from_bytes(b[10:14], "little") == 16
    assert decode(a) == (len(a), Frame(5, plain)) and decode(b) == (len(b), Frame(5, tokened))
    # any other length does not parse
    head = struct.pack("<2sBBBBII", b"\xa5\x5a", 1, codec.MsgType.STIMULATE, 0, 0, 1, 14)
    head += codec.header_crc(head).to_bytes(2, "little")
    body = head + b[16:30]
    n, r = decode(body + zlib.crc32(body).to_bytes(4, "little"))
    assert r.reason == "malformed" and "12 or 16" in r.detail


def test_stim_epoch_token_sits_at_offset_40_and_the_10_form_still_decodes():
    samples = np.arange(12, dtype=np.int32).reshape(2, 6)
    e10 = StimEpoch(1_000_000, 7, Output.APS, 1000, 990, 100, 20000, 2, 100, samples)
    e11 = StimEpoch(1_000_000, 7, Output.APS, 1000, 990, 100, 20000, 2, 100, samples, config_token=99)
    f10, f11 = encode(e10, 1), encode(e11, 1)
    assert len(f11) == len(f10) + 4
    assert f11[16 + 40 : 16 + 44] == (99).to_bytes(4, "little")
    assert f11[16 + 44 : -4] == f10[16 + 40 : -4]  # the samples follow
    assert decode(f10)[1].message.config_token is None
    assert decode(f11)[1].message == e11


def test_capabilities_flag_bit_1_announces_the_token():
    caps = Capabilities(1, "fw", "id", simulated=True, config_token=True)
    frame = encode(caps, 0)
    assert frame[16 + 3] == 0x03  # flags: simulated | config token
    assert decode(frame)[1].message == caps
    old = Capabilities(1, "fw", "id", simulated=True)
    assert encode(old, 0)[16 + 3] == 0x01 and decode(encode(old, 0))[1].message.config_token is False


# ----------------------------------------------------------------------------- headers that lie


def _header(mtype: int, length: int, seq: int = 1) -> bytes:
    head = struct.pack("<2sBBBBII", b"\xa5\x5a", 1, mtype, 0, 0, seq, length)
    return head + codec.header_crc(head).to_bytes(2, "little")


def test_a_small_message_announcing_a_big_payload_is_refused_at_once():
    hb = encode(BoardHeartbeat(100, 1), 2)
    d = Decoder()
    assert d.feed(_header(codec.MsgType.BOARD_HEARTBEAT, 131072) + hb) == [Frame(2, BoardHeartbeat(100, 1))]
    assert d.counters.too_long == 1 and d.counters.resyncs == 1


def test_a_header_announcing_128_kib_does_not_hold_back_the_frames_behind_it():
    # a CRC-good StimEpoch header that announces the protocol maximum and never sends it:
    # the next whole frame inside the announced length ends the wait
    liar = _header(codec.MsgType.STIM_EPOCH, codec.MAX_PAYLOAD)
    hbs = [encode(BoardHeartbeat(100 * i, i), 10 + i) for i in range(3)]
    d = Decoder()
    assert d.feed(liar) == []
    assert d.feed(hbs[0][:10]) == []
    assert d.feed(hbs[0][10:]) == [Frame(10, BoardHeartbeat(0, 0))]
    assert d.feed(hbs[1] + hbs[2]) == [Frame(11, BoardHeartbeat(100, 1)), Frame(12, BoardHeartbeat(200, 2))]
    assert d.counters.truncated == 1 and d.counters.frames == 3


def test_a_big_frame_arriving_in_pieces_is_not_cut_short():
    big = encode(StimEpoch(5, 1, Output.PROBE, 1000, 1000, 100, 50000, 500, 100,
                           np.random.default_rng(3).integers(-(2**31), 2**31, (2, 15000)).astype(np.int32)), 4)
    d = Decoder()
    got = []
    for i in range(0, len(big), 4093):
        got += d.feed(big[i : i + 4093])
    assert len(got) == 1 and got[0].seq == 4 and d.counters.truncated == 0


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(mtype=st.sampled_from(sorted(codec.MAX_PAYLOAD_BY_TYPE) + [0x3E, 0x6F]), length=st.integers(0, 2**32 - 1),
       seq=u32, chunk=st.integers(1, 64), batch=st.lists(st.tuples(messages, u32), min_size=1, max_size=3))
def test_no_lying_header_holds_back_good_frames(mtype, length, seq, chunk, batch):
    """Whatever a CRC-good header announces, every good frame after it comes out: the
    lie is refused at once (too long for its type), cut short by the first whole frame
    inside it, or completed and failing its CRC-32."""
    good = b"".join(encode(m, s) for m, s in batch)
    data = _header(mtype, length, seq) + good
    d = Decoder()
    got = []
    for i in range(0, len(data), chunk):
        got += d.feed(data[i : i + chunk])
    assert got == [Frame(s, m) for m, s in batch]
    assert d.counters.too_long + d.counters.truncated + d.counters.bad_crc >= 1
