"""The codec's edges: a lying header's look-ahead, type directions, sequence helpers, decoder reset.

Frames here are built byte by byte (``raw``), so a test can give a frame a good CRC-32 over
a bad header CRC, or a good pair of CRCs over a length its type does not allow.
"""

from __future__ import annotations

import binascii
import struct
import zlib

import pytest

from firmware_bridge import codec
from firmware_bridge.codec import Decoder, Frame, MsgType, Rejected, decode, direction_of, encode, next_seq, type_id
from firmware_bridge.messages import BoardHeartbeat

HEAD = struct.Struct("<2sBBBBII")


def raw(msg_type: int, payload: bytes, *, seq: int = 0, length: int | None = None, header_crc_delta: int = 0) -> bytes:
    """A frame of ``msg_type``; ``length`` may lie; ``header_crc_delta`` spoils the header CRC
    while the CRC-32 is computed over the spoiled header (so only the header CRC is wrong)."""
    head = HEAD.pack(codec.SYNC, codec.FRAME_VERSION, msg_type, 0, 0, seq, len(payload) if length is None else length)
    hcrc = (binascii.crc_hqx(head, 0xFFFF) + header_crc_delta) & 0xFFFF
    head += hcrc.to_bytes(2, "little")
    return head + payload + zlib.crc32(payload, zlib.crc32(head)).to_bytes(4, "little")


def liar(room: int) -> bytes:
    """A good header announcing ``room`` payload bytes that never come."""
    return raw(MsgType.EMG_BLOCK, b"", length=room)[: codec.HEADER_SIZE]


def test_raw_builds_the_same_bytes_as_encode():
    frame = encode(BoardHeartbeat(board_time_us=5), seq=7)
    assert raw(MsgType.BOARD_HEARTBEAT, frame[codec.HEADER_SIZE:-4], seq=7) == frame


def test_a_lying_header_gives_way_to_a_whole_good_frame_behind_it():
    good = encode(BoardHeartbeat(board_time_us=5), seq=1)
    buf = liar(200) + b"\x00" * 3 + good
    consumed, result = decode(buf)
    assert consumed == codec.HEADER_SIZE + 3
    assert isinstance(result, Rejected) and result.reason == "truncated"
    assert result.detail == f"header announced 200 bytes; a whole frame started after {codec.HEADER_SIZE + 3}"
    consumed, result = decode(buf[consumed:])
    assert isinstance(result, Frame) and result.seq == 1


@pytest.mark.parametrize("inner", [
    raw(MsgType.ACK, b"\x00" * 8, header_crc_delta=1),  # good CRC-32, bad header CRC
    raw(MsgType.ACK, b"\x00" * 257),  # both CRCs good, longer than an Ack may be
    raw(MsgType.ACK, b"\x00" * 8)[:-1] + b"\x00",  # good header, bad CRC-32
    codec.SYNC + b"\x01" * 30,  # a sync word and noise
])
def test_a_lying_header_waits_when_nothing_behind_it_is_a_whole_good_frame(inner):
    buf = liar(len(inner) + 100) + inner
    assert decode(buf) == (0, None)


def test_a_frame_of_exactly_its_type_s_longest_payload_counts_as_whole_behind_a_lying_header():
    inner = raw(MsgType.ACK, b"\x00" * codec.max_payload(MsgType.ACK))
    consumed, result = decode(liar(len(inner) + 100) + inner)
    assert consumed == codec.HEADER_SIZE and isinstance(result, Rejected) and result.reason == "truncated"


def test_a_frame_whose_end_is_still_missing_is_not_whole():
    inner = encode(BoardHeartbeat(board_time_us=5), seq=1)
    assert decode(liar(200) + inner[:-1]) == (0, None)


@pytest.mark.parametrize("msg_type, direction", [
    (0x01, "host"), (0x3F, "host"), (0x40, "board"), (0x41, "board"), (0x6F, "board"), (0x70, "host"),
    (0x7F, "host"), (0x80, "host"),
])
def test_type_ids_belong_to_the_host_or_the_board(msg_type, direction):
    assert direction_of(msg_type) == direction


def test_every_message_class_has_its_type_and_others_are_named_in_the_refusal():
    assert type_id(BoardHeartbeat) == MsgType.BOARD_HEARTBEAT == type_id(BoardHeartbeat(board_time_us=1))
    with pytest.raises(TypeError) as info:
        type_id(3)
    assert str(info.value) == "int is not a Board API message"


def test_the_next_sequence_number_wraps_at_two_to_the_32():
    assert next_seq(0) == 1 and next_seq(41) == 42
    assert next_seq(codec.SEQ_MODULO - 1) == 0
    assert isinstance(next_seq(5), int)


def test_the_counters_as_a_dict_are_a_copy_with_the_corrupt_total():
    dec = Decoder()
    dec.feed(liar(10)[:-1] + b"\x00" + encode(BoardHeartbeat(board_time_us=5), seq=0))  # a bad header CRC first
    d = dec.counters.as_dict()
    assert d["corrupt"] == 1 == d["bad_header_crc"] and d["frames"] == 1
    assert d["seq_restarts"] == {"host": 0, "board": 0}
    d["seq_restarts"]["board"] = 9
    assert dec.counters.seq_restarts == {"host": 0, "board": 0}


def test_a_reset_forgets_the_partial_frame_and_the_sequence_history_but_keeps_the_counters():
    dec = Decoder()
    beat = [encode(BoardHeartbeat(board_time_us=i), seq=i) for i in range(12)]
    assert [f.seq for f in dec.feed(beat[3])] == [3]
    dec.feed(beat[4][:10])  # half a frame
    dec.reset()
    # a new connection: seq 9 after 3 is no gap, the half frame is gone
    assert [f.seq for f in dec.feed(beat[9])] == [9]
    c = dec.counters
    assert (c.seq_gaps["board"], c.frames_missed["board"], c.seq_restarts["board"], c.frames) == (0, 0, 0, 2)
    # in sync again after the reset: garbage is one new resynchronisation
    dec.feed(b"\x00\x01" + beat[10])
    assert c.resyncs == 1 and c.garbage == 1
    dec.reset()
    dec.feed(b"\x00" + beat[11])
    assert c.resyncs == 2 and c.garbage == 2 and c.seq_gaps["board"] == 0
