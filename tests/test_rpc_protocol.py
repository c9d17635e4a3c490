"""The RPC core with bytes only: framing, chunking, limits, bad input. No network, no sleeps."""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest

from remotemedia.exceptions import DecodeError, EncodeError, MessageTooLargeError
from remotemedia.rpc import CHUNK_SIZE, Kind, Message, RPCProtocol, TooLarge
from remotemedia.rpc.framing import Reassembler, Refused, chunk
from remotemedia.rpc.protocol import HEADER_SIZE


def deliver(sender: RPCProtocol, receiver: RPCProtocol, kind, id, body=None, *, pickled=False):
    payloads = sender.send_pickled(kind, id, body) if pickled else sender.send(kind, id, body)
    assert all(len(p) <= sender.chunk_size for p in payloads)
    events = []
    for payload in payloads:
        events += receiver.receive_data(payload)
    return payloads, events


def test_small_message_is_one_payload_and_round_trips():
    a, b = RPCProtocol(1 << 20), RPCProtocol(1 << 20)
    payloads, events = deliver(a, b, Kind.CALL, 7, [1, "process", (2.5, b"x"), {"k": None}])
    assert len(payloads) == 1 and payloads[0][0] == 0
    assert events == [Message(Kind.CALL, 7, [1, "process", (2.5, b"x"), {"k": None}])]


@pytest.mark.parametrize("nbytes", [CHUNK_SIZE - 200, CHUNK_SIZE, CHUNK_SIZE * 3 + 17, 8 * 1024 * 1024])
def test_large_arrays_are_chunked_and_arrive_bit_exact_and_writable(nbytes):
    rng = np.random.default_rng(nbytes)
    array = rng.integers(0, 256, nbytes, dtype=np.uint8)
    a, b = RPCProtocol(16 << 20), RPCProtocol(16 << 20)
    payloads, events = deliver(a, b, Kind.RESULT, 3, {"a": array})
    assert len(payloads) >= max(1, nbytes // CHUNK_SIZE)
    [message] = events
    assert message.kind is Kind.RESULT and message.id == 3
    np.testing.assert_array_equal(message.body["a"], array)
    message.body["a"][0] = 1  # decoded from a bytearray: writable, no copy needed


def test_events_come_only_when_the_last_chunk_arrives():
    a, b = RPCProtocol(1 << 20), RPCProtocol(1 << 20)
    payloads = a.send(Kind.YIELD, 1, b"z" * (CHUNK_SIZE * 2))
    assert [b.receive_data(p) for p in payloads[:-1]] == [[]] * (len(payloads) - 1)
    assert b.receive_data(payloads[-1]) == [Message(Kind.YIELD, 1, b"z" * (CHUNK_SIZE * 2))]
    # The stream goes on normally afterwards.
    assert deliver(a, b, Kind.END, 1)[1] == [Message(Kind.END, 1)]


def test_sending_above_the_limit_fails_before_anything_is_produced():
    a = RPCProtocol(1000)
    with pytest.raises(MessageTooLargeError) as info:
        a.send(Kind.CALL, 1, b"x" * 2000)
    assert info.value.limit == 1000 and info.value.size > 2000
    assert "max_message_size" in str(info.value)


def test_the_peers_lower_limit_applies_to_sending():
    a = RPCProtocol(1 << 20)
    a.peer_limit(500)
    assert a.send_limit == 500
    with pytest.raises(MessageTooLargeError):
        a.send(Kind.RESULT, 1, b"x" * 600)
    a.peer_limit(1 << 30)  # never above our own
    assert a.send_limit == 1 << 20


@pytest.mark.parametrize("size", [2000, CHUNK_SIZE * 5])
def test_receiving_above_the_limit_is_refused_with_the_calls_id_and_skipped(size):
    big, small = RPCProtocol(1 << 20), RPCProtocol(1000)
    _, events = deliver(big, small, Kind.CALL, 42, random.Random(size).randbytes(size))  # not compressible
    [event] = events
    assert isinstance(event, TooLarge)
    assert (event.kind, event.id, event.limit) == (Kind.CALL, 42, 1000) and event.size > size
    # Nothing was buffered, and the next message is read normally.
    assert small._reassembler._buffer is None
    assert deliver(big, small, Kind.PING, 5, 1.5)[1] == [Message(Kind.PING, 5, 1.5)]


def test_pickled_bodies_are_handed_up_as_bytes_never_loaded():
    a, b = RPCProtocol(1 << 20), RPCProtocol(1 << 20)
    _, events = deliver(a, b, Kind.CREATE, 9, b"\x80\x05not-loaded", pickled=True)
    assert events == [Message(Kind.CREATE, 9, b"\x80\x05not-loaded", pickled=True)]
    _, events = deliver(a, b, Kind.CREATE, 10, b"y" * (CHUNK_SIZE * 2), pickled=True)
    assert events[0].pickled and events[0].body == b"y" * (CHUNK_SIZE * 2)


def test_unsupported_body_raises_encode_error():
    with pytest.raises(EncodeError):
        RPCProtocol(1 << 20).send(Kind.CALL, 1, object())


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x07abc",  # unknown chunk kind
        b"\x02more",  # continuation without a first chunk
        b"\x01" + struct.pack("!Q", 3) + b"abcd",  # first chunk longer than its total
        b"\x00\x01",  # shorter than a header
        b"\x00" + struct.pack("!BBI", 99, 0, 1) + b"\x01",  # unknown message kind
        b"\x00" + struct.pack("!BBI", 4, 0, 1) + b"garbage",  # body that does not decode
    ],
)
def test_malformed_input_raises_decode_error(payload):
    with pytest.raises(DecodeError):
        RPCProtocol(1 << 20).receive_data(payload)


def test_a_chunk_running_past_its_message_is_refused():
    r = Reassembler(1 << 20)
    assert r.feed(b"\x01" + struct.pack("!Q", 12) + b"abcd") is None
    with pytest.raises(DecodeError):
        r.feed(b"\x02" + b"x" * 20)


def test_a_new_message_in_the_middle_of_a_chunked_one_is_refused():
    r = Reassembler(1 << 20)
    r.feed(b"\x01" + struct.pack("!Q", 12) + b"abcd")
    with pytest.raises(DecodeError):
        r.feed(b"\x00" + b"abc")


def test_skipped_refused_chunks_cannot_overrun():
    r = Reassembler(10)
    event = r.feed(b"\x01" + struct.pack("!Q", 30) + b"h" * 20)
    assert isinstance(event, Refused) and event.size == 30 and event.head == b"h" * 16
    with pytest.raises(DecodeError):
        r.feed(b"\x02" + b"x" * 11)


def test_chunk_copies_parts_across_boundaries():
    parts = [b"ab", memoryview(b"cdefgh"), b"", b"ijklmnop"]
    out = chunk(parts, 16, chunk_size=12)
    assert out[0][0] == 1 and all(p[0] == 2 for p in out[1:])
    assert b"".join([out[0][9:], *(p[1:] for p in out[1:])]) == b"abcdefghijklmnop"
    assert all(len(p) <= 12 for p in out)
    with pytest.raises(ValueError):
        chunk(parts, 16, chunk_size=9)


def test_ids_out_of_range_and_tiny_limits_are_caller_errors():
    with pytest.raises(ValueError):
        RPCProtocol(1 << 20).send(Kind.CALL, 2**32, None)
    with pytest.raises(ValueError):
        RPCProtocol(HEADER_SIZE - 1)
