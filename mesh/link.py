"""The packet link's configuration and packet format (docs/ARCHITECTURE.md section 12).

The packet link stands in for EFA with its SRD transport: a message is cut into packets that are
sprayed over several lanes, may arrive in any order, land at their byte offset, and are
acknowledged one by one; lost ones are sent again. A packet is a sequence of 32-bit words:

    word 0   [3:0] type   [11:4] source node   [19:12] destination node   [31:20] message id
    word 1   [15:0] sequence number            [31:16] payload words
    word 2   DATA: byte offset of the payload in the message;  ACK/NACK: cumulative sequence
    word 3   DATA: message length in bytes;                     ACK/NACK: 0
    payload  0 .. max_payload words (DATA only)
    CRC      CRC-32 (IEEE 802.3, as zlib.crc32) of the bytes of every word before it, each word
             little-endian

An ACK acknowledges the packet ``seq`` and, cumulatively, every packet below ``cumulative``; a
NACK asks for ``seq`` again (and carries the cumulative sequence too). Lanes frame packets
(a lane marks each packet's last word), so a corrupted length field cannot desynchronize them.
"""

import zlib
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from .config import ConfigError, _check_int

__all__ = ["LinkConfig", "PacketType", "Header", "PacketError", "DropCause", "TxError",
           "HEADER_WORDS", "ACK_WORDS", "LANE_WIDTHS", "crc32", "build_packet", "parse_packet",
           "ack_packet"]

HEADER_WORDS = 4
ACK_WORDS = HEADER_WORDS + 1          # an ACK or NACK: header and CRC
LANE_WIDTHS = (8, 16, 32)             # bits per cycle: a word every 4, 2 or 1 cycles
MAX_NODE = 255
MAX_MESSAGE_ID = (1 << 12) - 1
MAX_SEQ = (1 << 16) - 1
MAX_PAYLOAD = (1 << 16) - 1


class PacketType(IntEnum):
    """Word 0 bits [3:0]. 0 and 4..15 are not packet types (such a packet is dropped)."""
    DATA = 1
    ACK = 2
    NACK = 3


class DropCause(IntEnum):
    """Why a receiver dropped a packet, checked in this order. DUPLICATE is acknowledged again
    (the first acknowledgement may have been lost); every other cause is dropped silently and
    counted."""
    CRC = 1            # the CRC word does not match, or fewer than HEADER_WORDS + 1 words
    TYPE = 2           # not a type this receiver takes (DATA at a receiver, ACK/NACK at a sender)
    DESTINATION = 3    # destination node is not this node (or source is not the peer)
    LENGTH = 4         # payload words 0 or above max_payload, or not the words the lane framed
    OFFSET = 5         # offset not a multiple of 4, or offset + payload past the message length,
                       # or message length 0, not a multiple of 4, or above the receive buffer
    MESSAGE = 6        # another message's packet, while this one is incomplete
    SEQUENCE = 7       # at or beyond the window: base + window (ACK: outside base..next_seq - 1)
    DUPLICATE = 8      # already received


class TxError(IntEnum):
    """Why a sender gave up on a message (sticky until reset)."""
    NONE = 0
    RETRY_LIMIT = 1    # a packet was sent 1 + retry_limit times without an acknowledgement
    LANES_DEAD = 2     # every lane was declared dead (lane_dead_after timeouts in a row)
    MESSAGE = 3        # the message to send is empty, not whole words, or past the source memory


class PacketError(ValueError):
    """A word sequence that is not a well-formed packet; ``cause`` is the :class:`DropCause`."""

    def __init__(self, cause, message):
        super().__init__(message)
        self.cause = cause


@dataclass(frozen=True)
class LinkConfig:
    """The packet link's parameters.

    ``lanes``: paths between the two ends (1 to 8), each a forward and a reverse channel.
    ``lane_width``: bits a lane moves per cycle, 8, 16 or 32 (a 32-bit word every 32 /
    lane_width cycles). ``latency``: cycles from a word entering a channel to its delivery
    (1 to 4096). ``max_payload``: payload words per packet (1 to 1024). ``window``: packets sent
    and not yet acknowledged, a power of two from 1 to 64. ``timeout``: cycles after a packet's
    last word leaves the sender before it is sent again (0: the default,
    :attr:`default_timeout`). ``retry_limit``: retransmissions of one packet before the message
    fails (0 to 255). ``lane_dead_after``: timeouts in a row on a lane before it is not used
    again (1 to 255). ``nack_gap``: a receiver missing packet ``base`` sends a NACK for it once a
    packet ``nack_gap`` or more beyond it arrives (1 to window; 0 turns NACKs off). ``ack_queue``:
    acknowledgements waiting per reverse channel (1 to 8; more are dropped). ``buffer_words``:
    the receive buffer, the longest message (16 to 2^20 words). ``source_words``: the sender's
    message memory (16 to 2^20 words).
    """
    lanes: int = 4
    lane_width: int = 32
    latency: int = 20
    max_payload: int = 128
    window: int = 32
    timeout: int = 0
    retry_limit: int = 16
    lane_dead_after: int = 4
    nack_gap: int = 8
    ack_queue: int = 4
    buffer_words: int = 16384
    source_words: int = 16384

    def __post_init__(self):
        _check_int("lanes", self.lanes, 1, 8)
        if self.lane_width not in LANE_WIDTHS:
            raise ConfigError(f"lane_width must be one of {LANE_WIDTHS} bits per cycle, "
                              f"not {self.lane_width!r}")
        _check_int("latency", self.latency, 1, 4096)
        _check_int("max_payload", self.max_payload, 1, 1024)
        _check_int("window", self.window, 1, 64)
        if self.window & (self.window - 1):
            raise ConfigError(f"window must be a power of two, not {self.window}")
        _check_int("timeout", self.timeout, 0, 1 << 20)
        _check_int("retry_limit", self.retry_limit, 0, 255)
        _check_int("lane_dead_after", self.lane_dead_after, 1, 255)
        _check_int("nack_gap", self.nack_gap, 0, self.window)
        _check_int("ack_queue", self.ack_queue, 1, 8)
        _check_int("buffer_words", self.buffer_words, 16, 1 << 20)
        _check_int("source_words", self.source_words, 16, 1 << 20)

    @property
    def word_cycles(self):
        """Cycles a lane takes per 32-bit word: 32 / lane_width."""
        return 32 // self.lane_width

    @property
    def max_packet_words(self):
        return HEADER_WORDS + self.max_payload + 1

    @property
    def default_timeout(self):
        """The longest round trip the window allows, so that a lane kept full never times out
        spuriously: a packet may wait in its channel behind every other packet of the window
        (store and forward, so window + 1 packet times), then its ACK behind a full ACK queue;
        plus the latency both ways and 16 cycles. (A timeout of one bare round trip is shorter,
        but then a duplicated packet's extra packet time on a busy lane turns into timeouts,
        retransmissions, more backlog and finally a lane declared dead.)"""
        words = ((self.window + 1) * self.max_packet_words
                 + (self.ack_queue + 1) * ACK_WORDS)
        return 2 * self.latency + words * self.word_cycles + 16

    @property
    def effective_timeout(self):
        return self.timeout or self.default_timeout

    @property
    def line_rate(self):
        """Bits per cycle over all lanes, one way."""
        return self.lanes * self.lane_width

    def efficiency(self, payload_words=None):
        """Payload words over packet words for full packets (the goodput bound without faults:
        header and CRC are the overhead)."""
        p = self.max_payload if payload_words is None else payload_words
        return p / (p + HEADER_WORDS + 1)


@dataclass(frozen=True)
class Header:
    """A packet header. For ACK and NACK, ``offset`` is the cumulative sequence number and
    ``length`` (message length) is 0."""
    type: int
    src: int
    dst: int
    message: int
    seq: int
    payload: int
    offset: int
    length: int

    def encode(self):
        """The four header words (raises :class:`ConfigError` for a field out of range)."""
        for name, top in [("type", 15), ("src", MAX_NODE), ("dst", MAX_NODE),
                          ("message", MAX_MESSAGE_ID), ("seq", MAX_SEQ),
                          ("payload", MAX_PAYLOAD), ("offset", 0xFFFFFFFF),
                          ("length", 0xFFFFFFFF)]:
            _check_int(f"packet {name}", getattr(self, name), 0, top)
        return [self.type | self.src << 4 | self.dst << 12 | self.message << 20,
                self.seq | self.payload << 16, self.offset, self.length]

    @classmethod
    def decode(cls, words):
        w0, w1, w2, w3 = (int(w) for w in words[:HEADER_WORDS])
        return cls(type=w0 & 0xF, src=(w0 >> 4) & 0xFF, dst=(w0 >> 12) & 0xFF,
                   message=w0 >> 20, seq=w1 & 0xFFFF, payload=w1 >> 16, offset=w2, length=w3)


def crc32(words):
    """CRC-32 of 32-bit words, each little-endian: zlib.crc32 of their bytes."""
    return zlib.crc32(np.asarray(words, dtype="<u4").tobytes())


def build_packet(header, payload=()):
    """The words of a packet: header, payload, CRC."""
    words = header.encode() + [int(w) & 0xFFFFFFFF for w in payload]
    return words + [crc32(words)]


def ack_packet(type, src, dst, message, seq, cumulative):
    """An ACK or NACK packet's words."""
    return build_packet(Header(type=int(type), src=src, dst=dst, message=message, seq=seq,
                               payload=0, offset=cumulative, length=0))


def parse_packet(words):
    """(header, payload) of a framed packet whose CRC and framing are right, or raises
    :class:`PacketError` with cause CRC or LENGTH (the checks every receiver makes first; the
    others depend on the receiver's state)."""
    words = [int(w) for w in words]
    if len(words) < HEADER_WORDS + 1 or crc32(words[:-1]) != words[-1]:
        raise PacketError(DropCause.CRC, f"CRC mismatch in a packet of {len(words)} words")
    header = Header.decode(words)
    if header.type not in tuple(PacketType):
        raise PacketError(DropCause.TYPE, f"packet type {header.type} is not DATA, ACK or NACK")
    if len(words) != HEADER_WORDS + header.payload + 1:
        raise PacketError(DropCause.LENGTH, f"header says {header.payload} payload words but "
                                            f"the lane framed {len(words) - HEADER_WORDS - 1}")
    return header, words[HEADER_WORDS:-1]
