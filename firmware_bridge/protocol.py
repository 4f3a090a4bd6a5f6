"""Wire protocol v1 between edge-runtime and the line controller.

Frame on the wire:  COBS(payload) 0x00
Payload:            version:u8  type:u8  seq:u16le  len:u8  body[len]  crc:u16le
CRC:                CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over version..body

Message types and bodies:
  0x01 TRIGGER    product:u16le                       device -> host: a part is present
  0x02 VERDICT    verdict:u8 flags:u8 score:f32le     host -> device, seq of the TRIGGER
                  verdict 0 = pass, 1 = reject; flags bit0 = fail-safe (deadline missed),
                  bit1 = inspection error
  0x03 HEARTBEAT  uptime_ms:u32le                     both ways, every heartbeat interval
  0x04 ERROR      code:u8 text[]                      both ways

COBS framing means 0x00 never appears inside a frame, so a reader resynchronises at the
next 0x00 after any garbage; the CRC rejects what is left of a corrupted frame.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass
from enum import IntEnum

VERSION = 1
MAX_BODY = 64
MAX_FRAME = 2 + 2 * (7 + MAX_BODY)  # generous bound for an encoded frame


class MessageType(IntEnum):
    TRIGGER = 0x01
    VERDICT = 0x02
    HEARTBEAT = 0x03
    ERROR = 0x04


class Verdict(IntEnum):
    PASS = 0
    REJECT = 1


FLAG_FAILSAFE = 0x01
FLAG_ERROR = 0x02


class FrameError(ValueError):
    """A frame that fails COBS, length, version or CRC checks."""


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE; binascii's crc_hqx is exactly this polynomial, in C."""
    return binascii.crc_hqx(data, crc)


def cobs_encode(data: bytes) -> bytes:
    out = bytearray([0])
    code_index, code = 0, 1
    for byte in data:
        if byte == 0:
            out[code_index] = code
            code_index, code = len(out), 1
            out.append(0)
            continue
        out.append(byte)
        code += 1
        if code == 0xFF:
            out[code_index] = code
            code_index, code = len(out), 1
            out.append(0)
    out[code_index] = code
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    out = bytearray()
    index = 0
    while index < len(data):
        code = data[index]
        block = data[index + 1 : index + code]
        if code == 0 or 0 in block or len(block) != code - 1:
            raise FrameError("bad COBS block")
        out += block
        index += code
        if code < 0xFF and index < len(data):
            out.append(0)
    return bytes(out)


@dataclass(frozen=True)
class Message:
    type: int
    seq: int
    body: bytes = b""


def encode(message: Message) -> bytes:
    """One frame, delimiter included."""
    if len(message.body) > MAX_BODY:
        raise ValueError(f"body of {len(message.body)} bytes exceeds {MAX_BODY}")
    head = struct.pack("<BBHB", VERSION, message.type, message.seq & 0xFFFF, len(message.body))
    payload = head + message.body
    return cobs_encode(payload + struct.pack("<H", crc16(payload))) + b"\x00"


def decode_payload(frame: bytes) -> Message:
    """Decode one frame (without its 0x00 delimiter)."""
    payload = cobs_decode(frame)
    if len(payload) < 7:
        raise FrameError("frame too short")
    version, kind, seq, length = struct.unpack_from("<BBHB", payload)
    if version != VERSION:
        raise FrameError(f"protocol version {version} is not {VERSION}")
    if len(payload) != 5 + length + 2:
        raise FrameError("length field does not match the frame")
    (crc,) = struct.unpack_from("<H", payload, 5 + length)
    if crc != crc16(payload[: 5 + length]):
        raise FrameError("CRC mismatch")
    return Message(kind, seq, payload[5 : 5 + length])


class FrameDecoder:
    """Feed raw bytes; get whole messages. Garbage and corrupt frames are counted, skipped."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._discarding = False
        self.corrupt = 0
        self.overflow = 0

    def feed(self, data: bytes) -> list[Message]:
        messages = []
        for byte in data:
            if byte != 0:
                if self._discarding:
                    continue
                if len(self._buffer) >= MAX_FRAME:  # runaway garbage: drop to next 0x00
                    self.overflow += 1
                    self._discarding = True
                    self._buffer.clear()
                    continue
                self._buffer.append(byte)
                continue
            self._discarding = False
            if self._buffer:
                try:
                    messages.append(decode_payload(bytes(self._buffer)))
                except FrameError:
                    self.corrupt += 1
            self._buffer.clear()
        return messages


# ---- typed constructors and parsers ------------------------------------------------------
def trigger(seq: int, product: int) -> Message:
    return Message(MessageType.TRIGGER, seq, struct.pack("<H", product))


def verdict(seq: int, decision: Verdict, score: float, flags: int = 0) -> Message:
    return Message(MessageType.VERDICT, seq, struct.pack("<BBf", decision, flags, score))


def heartbeat(seq: int, uptime_ms: int) -> Message:
    return Message(MessageType.HEARTBEAT, seq, struct.pack("<I", uptime_ms & 0xFFFFFFFF))


def error(seq: int, code: int, text: str) -> Message:
    return Message(MessageType.ERROR, seq, bytes([code]) + text.encode()[: MAX_BODY - 1])


def parse_trigger(message: Message) -> int:
    if len(message.body) != 2:
        raise FrameError("TRIGGER body must be 2 bytes")
    return struct.unpack("<H", message.body)[0]


def parse_verdict(message: Message) -> tuple[Verdict, int, float]:
    if len(message.body) != 6:
        raise FrameError("VERDICT body must be 6 bytes")
    decision, flags, score = struct.unpack("<BBf", message.body)
    return Verdict(decision), flags, score
