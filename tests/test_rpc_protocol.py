"""The RPC core with bytes only: framing, chunking, limits, bad input. No network, no sleeps."""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest

from remotemedia.exceptions import DecodeError, EncodeError, MessageTooLargeError
from remotemedia.rpc import CHUNK_SIZE, ErrorCode, Kind, Message, Rejected, RPCProtocol, TooLarge
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
    ],
)
def test_malformed_input_raises_decode_error(payload):
    with pytest.raises(DecodeError):
        RPCProtocol(1 << 20).receive_data(payload)


@pytest.mark.parametrize(
    "payload, kind",
    [
        (b"\x00" + struct.pack("!BBI", 99, 0, 7) + b"\x01", None),  # unknown message kind
        (b"\x00" + struct.pack("!BBI", 4, 0, 7) + b"garbage", Kind.CALL),  # body that does not decode
    ],
    ids=["unknown-kind", "undecodable-body"],
)
def test_a_bad_message_with_intact_framing_is_rejected_not_fatal(payload, kind):
    protocol = RPCProtocol(1 << 20)
    [event] = protocol.receive_data(payload)
    assert isinstance(event, Rejected) and event.kind is kind and event.id == 7
    assert event.code == ErrorCode.BAD_REQUEST
    # The connection goes on: the next message decodes.
    [ok] = protocol.receive_data(RPCProtocol(1 << 20).send(Kind.PING, 1, 0.5)[0])
    assert ok == Message(Kind.PING, 1, 0.5)


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


# -- compression -----------------------------------------------------------------------

from remotemedia.rpc import Raw, compression  # noqa: E402


def test_a_compressible_body_is_sent_compressed_and_arrives_exact():
    a, b = RPCProtocol(16 << 20), RPCProtocol(16 << 20)
    audio = (np.sin(np.arange(1 << 18) / 10) * 3000).astype(np.int16)  # 512 KiB of a tone
    payloads, [message] = deliver(a, b, Kind.RESULT, 4, {"pcm": audio})
    wire = sum(len(p) for p in payloads)
    assert wire < audio.nbytes // 2
    assert payloads[0][0] == 0x01 and payloads[0][9 + 1] & 0x02  # first chunk, COMPRESSED flag
    np.testing.assert_array_equal(message.body["pcm"], audio)


@pytest.mark.parametrize("size", [compression.THRESHOLD - 1, 1 << 20])
def test_bodies_below_the_threshold_or_incompressible_go_as_they_are(size):
    a, b = RPCProtocol(16 << 20), RPCProtocol(16 << 20)
    body = random.Random(size).randbytes(size) if size > compression.THRESHOLD else b"z" * 1000
    payloads, [message] = deliver(a, b, Kind.RESULT, 5, body)
    assert message.body == body
    flags = payloads[0][1 + (8 if payloads[0][0] == 0x01 else 0) + 1]
    assert not flags & 0x02


def test_a_protocol_for_a_local_socket_does_not_compress():
    a, b = RPCProtocol(16 << 20, compress=False), RPCProtocol(16 << 20)
    audio = (np.sin(np.arange(1 << 18) / 10) * 3000).astype(np.int16)
    data = a.encode(Kind.INPUT, 3, audio)
    assert not data[1] & 0x02 and len(data) > audio.nbytes  # as it is, flags clear
    np.testing.assert_array_equal(b.decode(data).body, audio)


def test_compression_is_used_only_when_it_saves_a_sixteenth():
    assert compression.compress(b"a" * compression.THRESHOLD) is not None
    assert compression.compress(random.Random(1).randbytes(1 << 16)) is None
    assert compression.compress(b"a" * (compression.THRESHOLD - 1)) is None


def test_pickled_bodies_are_compressed_too_and_still_handed_up_as_bytes():
    a, b = RPCProtocol(16 << 20), RPCProtocol(16 << 20)
    data = b"\x80\x05" + b"state" * 20000
    payloads, [message] = deliver(a, b, Kind.CREATE, 9, data, pickled=True)
    assert sum(len(p) for p in payloads) < len(data) // 4
    assert message == Message(Kind.CREATE, 9, data, pickled=True)


def test_the_limit_applies_to_the_uncompressed_size_on_both_sides():
    zeros = bytes(1 << 20)  # compresses to about 4 KiB
    with pytest.raises(MessageTooLargeError):
        RPCProtocol(1 << 19).send(Kind.CALL, 1, zeros)
    # A peer that compresses a body above our limit gets TooLarge, before anything is inflated.
    sender, receiver = RPCProtocol(4 << 20), RPCProtocol(1 << 19)
    _, [event] = deliver(sender, receiver, Kind.CALL, 11, zeros)
    assert isinstance(event, TooLarge) and (event.kind, event.id, event.limit) == (Kind.CALL, 11, 1 << 19)
    assert event.size > 1 << 20


def test_a_compressed_body_that_does_not_inflate_is_rejected():
    bogus = struct.pack("!BBI", Kind.RESULT, 0x02, 1) + struct.pack("<I", 1000) + b"\xff" * 20
    for data in (bogus, struct.pack("!BBI", Kind.RESULT, 0x02, 1) + b"\x01"):
        [event] = RPCProtocol(1 << 20).receive_data(b"\x00" + data)
        assert isinstance(event, Rejected) and event.code == ErrorCode.BAD_REQUEST and event.id == 1
    with pytest.raises(DecodeError):
        RPCProtocol(1 << 20).decode(bogus)  # decode() itself raises; receive_data() answers with Rejected


def lz4_bomb(kind: Kind, id: int, size: int = 60 << 20) -> bytes:
    """A whole message whose (pickled) body is ``size`` zero bytes, LZ4-compressed (about 1/250 of that on the wire)."""
    return struct.pack("!BBI", kind, 0x03, id) + compression.compress(bytes(size))


def test_control_kinds_are_never_compressed_and_a_compressed_one_is_rejected_unread():
    # A sender leaves a control kind's body as it is, however large.
    assert not RPCProtocol(16 << 20).encode(Kind.PING, 1, b"p" * (64 << 10))[1] & 0x02
    assert RPCProtocol(16 << 20).encode(Kind.CALL, 1, b"p" * (64 << 10))[1] & 0x02
    budget = compression.InflateBudget(1 << 30)
    receiver = RPCProtocol(64 << 20, inflate=budget)
    [event] = receiver.receive_data(b"\x00" + lz4_bomb(Kind.PING, 5, 1 << 20))
    assert isinstance(event, Rejected) and (event.kind, event.id, event.code) == (Kind.PING, 5, ErrorCode.BAD_REQUEST)
    assert budget.refused == 0  # refused for its kind, before the budget was asked
    # Relayed control kinds too: a worker never gets a compressed CANCEL.
    relay = RPCProtocol(64 << 20, relay=frozenset({Kind.CANCEL}))
    [event] = relay.receive_data(b"\x00" + lz4_bomb(Kind.CANCEL, 6, 1 << 20))
    assert isinstance(event, Rejected) and event.kind is Kind.CANCEL


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_inflate_budget_refills_at_its_rate_and_holds_one_largest_message():
    clock = Clock()
    budget = compression.InflateBudget(1000, largest=5000, clock=clock)
    assert budget.burst == 5000
    assert budget.take(5000) and not budget.take(1)
    clock.now += 1.0
    assert budget.take(1000) and not budget.take(1)
    clock.now += 100.0  # never more than the burst
    assert budget.take(5000) and not budget.take(1)
    assert budget.refused == 3
    with pytest.raises(ValueError):
        compression.InflateBudget(0)


@pytest.mark.parametrize("relay", [frozenset(), frozenset({Kind.CALL})], ids=["decoded", "relayed"])
def test_compressed_bodies_beyond_the_budget_are_rejected_before_inflating(relay):
    clock = Clock()
    budget = compression.InflateBudget(64 << 20, largest=64 << 20, clock=clock)
    receiver = RPCProtocol(64 << 20, inflate=budget, relay=relay)
    bomb = b"\x00" + lz4_bomb(Kind.CALL, 9)
    [first] = receiver.receive_data(bomb)
    assert not isinstance(first, Rejected)  # within the first second's budget
    [second] = receiver.receive_data(bomb)
    assert isinstance(second, Rejected) and second.code == ErrorCode.RATE_LIMITED and second.id == 9
    assert "inflate rate" in second.reason
    clock.now += 1.0
    [third] = receiver.receive_data(bomb)
    assert not isinstance(third, Rejected)


# -- whole messages and relaying -------------------------------------------------------


def test_encode_and_decode_whole_messages_for_a_stream_socket():
    p = RPCProtocol(16 << 20)
    array = np.arange(100_000, dtype=np.float32)
    data = p.encode(Kind.YIELD, 3, {"x": array})
    message = p.decode(data)
    assert message.kind is Kind.YIELD and message.id == 3
    np.testing.assert_array_equal(message.body["x"], array)
    assert p.decode(p.encode(Kind.CREATE, 8, b"pickled", pickled=True)) == Message(Kind.CREATE, 8, b"pickled", pickled=True)


def test_a_relay_gets_chosen_kinds_undecoded_and_can_send_them_on():
    client, relay = RPCProtocol(1 << 20), RPCProtocol(1 << 20, relay=frozenset({Kind.CALL}))
    body = [1, "process", [np.arange(5)], {}, 0, None]
    _, [raw] = deliver(client, relay, Kind.CALL, 21, body)
    assert isinstance(raw, Raw) and (raw.kind, raw.id) == (Kind.CALL, 21)
    # Not decoded by the relay; the worker behind it decodes it.
    worker = RPCProtocol(1 << 20)
    decoded = worker.decode(raw.data)
    assert decoded.id == 21 and decoded.body[1] == "process"
    np.testing.assert_array_equal(decoded.body[2][0], np.arange(5))
    # Other kinds are decoded as usual (the relay answers pings and HELLO itself).
    assert deliver(client, relay, Kind.PING, 2, 0.5)[1] == [Message(Kind.PING, 2, 0.5)]
    # The worker's reply goes back through the relay as it was made.
    reply = worker.encode(Kind.RESULT, 21, "done")
    events = []
    for payload in relay.send_raw(reply):
        events += client.receive_data(payload)
    assert events == [Message(Kind.RESULT, 21, "done")]


def test_send_raw_refuses_a_message_above_the_peers_limit():
    relay = RPCProtocol(1 << 20)
    relay.peer_limit(1000)
    with pytest.raises(MessageTooLargeError):
        relay.send_raw(RPCProtocol(1 << 20).encode(Kind.RESULT, 1, random.Random(0).randbytes(2000)))


# -- memory: what a peer's announcement can make us hold ----------------------------------


def test_a_partial_message_holds_what_arrived_not_what_was_announced():
    r = Reassembler(64 << 20)
    first = b"\x01" + struct.pack("!Q", 64 << 20) + bytes(1000)
    assert r.feed(first) is None
    assert r.pending == 1000  # not 64 MiB
    assert r.feed(b"\x02" + bytes(5000)) is None and r.pending == 6000
    r.clear()
    assert r.pending == 0
    # After clear() the next message starts afresh.
    assert r.feed(b"\x00abc") == bytearray(b"abc")


def test_a_grown_buffer_reassembles_exactly_and_stays_writable():
    rng = random.Random(7)
    data = rng.randbytes(5 * CHUNK_SIZE + 123)
    r = Reassembler(1 << 20)
    out = [r.feed(p) for p in chunk([data], len(data))]
    assert out[:-1] == [None] * (len(out) - 1)
    assert out[-1] == data and isinstance(out[-1], bytearray)
    with pytest.raises(DecodeError):  # still refuses to run past the announced size
        r.feed(b"\x01" + struct.pack("!Q", 10) + b"abcd")
        r.feed(b"\x02" + b"x" * 7)


def test_closing_a_protocol_drops_its_partial_message():
    p = RPCProtocol(64 << 20)
    p.receive_data(b"\x01" + struct.pack("!Q", 1 << 20) + bytes(CHUNK_SIZE - 9))
    assert p.pending == CHUNK_SIZE - 9
    p.close()
    assert p.pending == 0
