"""The packet link's configuration and packet format (mesh/link.py, docs/ARCHITECTURE.md section
12, "Packets and lanes"): parameter checks, derived values, the header's bit layout (encode and
decode round trip), the CRC (zlib's CRC-32 of the words' little-endian bytes), and the causes
:func:`parse_packet` reports."""

import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.config import ConfigError
from mesh.link import (ACK_WORDS, HEADER_WORDS, DropCause, Header, LinkConfig, PacketError,
                       PacketType, ack_packet, build_packet, crc32, parse_packet)

U32 = st.integers(0, 0xFFFFFFFF)


# Configuration -------------------------------------------------------------------------------

def test_defaults_and_derived_values():
    c = LinkConfig()
    assert (c.lanes, c.lane_width, c.latency, c.max_payload, c.window, c.timeout,
            c.retry_limit, c.lane_dead_after, c.nack_gap, c.ack_queue, c.buffer_words,
            c.source_words) == (4, 32, 20, 128, 32, 0, 16, 4, 8, 4, 16384, 16384)
    assert c.word_cycles == 1 and c.max_packet_words == 133 and c.line_rate == 128
    # 2 x latency + ((window + 1) x longest packet + (ACK queue + 1) x ACK) x r + 16
    assert c.default_timeout == 2 * 20 + (33 * 133 + 5 * 5) * 1 + 16 == 4470
    assert c.effective_timeout == 4470
    assert LinkConfig(timeout=50).effective_timeout == 50
    narrow = LinkConfig(lane_width=8, lanes=2, latency=3, max_payload=16, ack_queue=2)
    assert narrow.word_cycles == 4 and narrow.line_rate == 16
    assert narrow.default_timeout == 6 + (33 * 21 + 3 * 5) * 4 + 16


def test_efficiency():
    assert LinkConfig().efficiency() == pytest.approx(128 / 133)
    assert round(100 * LinkConfig().efficiency(), 1) == 96.2
    assert LinkConfig(max_payload=1).efficiency() == pytest.approx(1 / 6)
    assert LinkConfig().efficiency(payload_words=11) == pytest.approx(11 / 16)


@pytest.mark.parametrize("kwargs, message", [
    ({"lanes": 0}, "lanes must be from 1 to 8, not 0"),
    ({"lanes": 9}, "lanes must be from 1 to 8, not 9"),
    ({"lanes": 2.0}, "lanes must be an integer, not 2.0"),
    ({"lane_width": 4}, "lane_width must be one of (8, 16, 32) bits per cycle, not 4"),
    ({"lane_width": 64}, "lane_width must be one of (8, 16, 32) bits per cycle, not 64"),
    ({"latency": 0}, "latency must be from 1 to 4096, not 0"),
    ({"latency": 4097}, "latency must be from 1 to 4096, not 4097"),
    ({"max_payload": 0}, "max_payload must be from 1 to 1024, not 0"),
    ({"max_payload": 1025}, "max_payload must be from 1 to 1024, not 1025"),
    ({"window": 0}, "window must be from 1 to 64, not 0"),
    ({"window": 128}, "window must be from 1 to 64, not 128"),
    ({"window": 12}, "window must be a power of two, not 12"),
    ({"timeout": -1}, "timeout must be from 0 to 1048576, not -1"),
    ({"retry_limit": 256}, "retry_limit must be from 0 to 255, not 256"),
    ({"lane_dead_after": 0}, "lane_dead_after must be from 1 to 255, not 0"),
    ({"nack_gap": 33}, "nack_gap must be from 0 to 32, not 33"),
    ({"window": 4, "nack_gap": 8}, "nack_gap must be from 0 to 4, not 8"),
    ({"ack_queue": 0}, "ack_queue must be from 1 to 8, not 0"),
    ({"ack_queue": 9}, "ack_queue must be from 1 to 8, not 9"),
    ({"buffer_words": 15}, "buffer_words must be from 16 to 1048576, not 15"),
    ({"source_words": 1 << 21}, "source_words must be from 16 to 1048576, not 2097152"),
    ({"retry_limit": True}, "retry_limit must be an integer, not True"),
])
def test_config_is_checked(kwargs, message):
    with pytest.raises(ConfigError) as info:
        LinkConfig(**kwargs)
    assert str(info.value) == message


# Header ------------------------------------------------------------------------------------

HEADERS = st.builds(Header, type=st.integers(0, 15), src=st.integers(0, 255),
                    dst=st.integers(0, 255), message=st.integers(0, 4095),
                    seq=st.integers(0, 65535), payload=st.integers(0, 65535), offset=U32,
                    length=U32)


@given(HEADERS)
def test_header_round_trip(header):
    words = header.encode()
    assert len(words) == HEADER_WORDS and all(0 <= w <= 0xFFFFFFFF for w in words)
    assert Header.decode(words) == header


@given(U32, U32, U32, U32)
def test_header_decode_encode_round_trip(w0, w1, w2, w3):
    assert Header.decode([w0, w1, w2, w3]).encode() == [w0, w1, w2, w3]


def test_header_bit_layout():
    h = Header(type=PacketType.NACK, src=0xAB, dst=0xCD, message=0x123, seq=0x4567,
               payload=0x89, offset=0xDEADBEEF, length=0x1000)
    assert h.encode() == [0x123CDAB3, 0x00894567, 0xDEADBEEF, 0x1000]


@pytest.mark.parametrize("field, value, message", [
    ("type", 16, "packet type must be from 0 to 15, not 16"),
    ("src", 256, "packet src must be from 0 to 255, not 256"),
    ("dst", -1, "packet dst must be from 0 to 255, not -1"),
    ("message", 4096, "packet message must be from 0 to 4095, not 4096"),
    ("seq", 65536, "packet seq must be from 0 to 65535, not 65536"),
    ("payload", 65536, "packet payload must be from 0 to 65535, not 65536"),
    ("offset", 1 << 32, "packet offset must be from 0 to 4294967295, not 4294967296"),
])
def test_header_fields_are_checked(field, value, message):
    fields = dict(type=1, src=1, dst=2, message=0, seq=0, payload=1, offset=0, length=4)
    fields[field] = value
    with pytest.raises(ConfigError) as info:
        Header(**fields).encode()
    assert str(info.value) == message


# CRC ---------------------------------------------------------------------------------------

@settings(max_examples=200)
@given(st.lists(U32, max_size=40))
def test_crc_is_zlib_crc32_of_little_endian_words(words):
    assert crc32(words) == zlib.crc32(struct.pack(f"<{len(words)}I", *words))


def test_crc_known_values():
    assert crc32([]) == 0
    assert crc32([0x34333231, 0x38373635]) == zlib.crc32(b"12345678") == 0x9AE0DAAF


# Packets -----------------------------------------------------------------------------------

def data_header(**kwargs):
    fields = dict(type=PacketType.DATA, src=1, dst=2, message=7, seq=3, payload=4,
                  offset=48, length=64)
    fields.update(kwargs)
    return Header(**fields)


@given(st.lists(U32, min_size=1, max_size=20), st.integers(0, 65535))
def test_build_and_parse_round_trip(payload, seq):
    header = data_header(seq=seq, payload=len(payload))
    words = build_packet(header, payload)
    assert len(words) == HEADER_WORDS + len(payload) + 1
    assert words[-1] == crc32(words[:-1])
    assert parse_packet(words) == (header, payload)


def test_ack_packet_is_five_words():
    words = ack_packet(PacketType.ACK, src=2, dst=1, message=7, seq=5, cumulative=3)
    assert len(words) == ACK_WORDS
    header, payload = parse_packet(words)
    assert payload == [] and (header.type, header.seq, header.offset, header.length) == (
        PacketType.ACK, 5, 3, 0)


def cause_of(words):
    with pytest.raises(PacketError) as info:
        parse_packet(words)
    return info.value.cause, str(info.value)


@given(st.integers(0, 32 * 9 - 1))
def test_any_single_bit_flip_is_a_crc_drop(bit):
    words = build_packet(data_header(), [1, 2, 3, 4])
    words[bit // 32] ^= 1 << (bit % 32)
    assert cause_of(words) == (DropCause.CRC, "CRC mismatch in a packet of 9 words")


def test_short_packets_are_crc_drops():
    # Four words can carry a matching "CRC" of three, but a packet has at least five words.
    words = [1, 2, 3]
    assert cause_of(words + [crc32(words)])[0] == DropCause.CRC
    assert cause_of([])[0] == DropCause.CRC


@pytest.mark.parametrize("type_", [0, 4, 9, 15])
def test_unknown_types_are_type_drops(type_):
    words = build_packet(data_header(type=type_), [1, 2, 3, 4])
    assert cause_of(words) == (DropCause.TYPE, f"packet type {type_} is not DATA, ACK or NACK")


def test_payload_field_not_the_framed_words_is_a_length_drop():
    words = build_packet(data_header(payload=5), [1, 2, 3, 4])
    assert cause_of(words) == (DropCause.LENGTH,
                               "header says 5 payload words but the lane framed 4")
    words = build_packet(data_header(payload=0), [])
    assert parse_packet(words)[1] == []          # parse_packet frames; the ends check 0
