"""The call conversation's rules (remotemedia.rpc.conversation), fed bytes: no network, no event loop, no sleeps."""

from __future__ import annotations

import pytest

from remotemedia.exceptions import (
    AuthenticationError,
    MessageTooLargeError,
    RemoteExecutionError,
    RemoteTimeoutError,
    ResourceLimitError,
    SerializationError,
)
from remotemedia.rpc import Message, RPCProtocol, calls
from remotemedia.rpc.calls import INPUT_WINDOW, STREAM_WINDOW, ErrorCode, Kind
from remotemedia.rpc.conversation import (
    Announcement,
    Answer,
    ClientCalls,
    Credit,
    ExecutorCalls,
    Failure,
    Feed,
    Granted,
    Ignored,
    Item,
    Refuse,
    Resume,
    Serve,
    SessionEnded,
    Stop,
    StreamEnd,
    Window,
    exception_for,
)


class Wire:
    """Two protocol ends joined by bytes: what one sends, the other decodes."""

    def __init__(self) -> None:
        self.client = RPCProtocol(1 << 20)
        self.executor = RPCProtocol(1 << 20)

    def _carry(self, sender: RPCProtocol, receiver: RPCProtocol, kind: Kind, id: int, body) -> Message:
        events = [e for payload in sender.send(kind, id, body) for e in receiver.receive_data(payload)]
        assert len(events) == 1 and isinstance(events[0], Message), events
        return events[0]

    def to_executor(self, kind: Kind, id: int, body=None) -> Message:
        return self._carry(self.client, self.executor, kind, id, body)

    def to_client(self, kind: Kind, id: int, body=None) -> Message:
        return self._carry(self.executor, self.client, kind, id, body)


def receive(calls_: ClientCalls, message: Message):
    return calls_.receive(message.kind, message.id, message.body)


def test_call_ids_are_fresh():
    client = ClientCalls()
    ids = [client.new_id() for _ in range(5)]
    assert ids == sorted(set(ids)) and ids[0] > 0


def test_a_plain_call_is_settled_by_its_result():
    wire, client = Wire(), ClientCalls()
    id = client.new_id()
    call = calls.parse_call(wire.to_executor(Kind.CALL, id, calls.call_body(1, "add", [1, 2], {})).body)
    assert call == calls.Call(1, "add", [1, 2], {}) and call.credit == 0
    assert receive(client, wire.to_client(Kind.RESULT, id, 3)) == Answer(id, 3)


def test_a_stream_under_credit_by_bytes():
    wire, client = Wire(), ClientCalls()
    id = client.new_id()
    stream = client.open_stream(id)
    call = calls.parse_call(wire.to_executor(Kind.CALL, id, calls.call_body(1, "gen", [], {}, stream.window.initial)).body)
    yields = Credit(call.credit)  # the executor's side
    received = []
    for n in range(40):
        # The client consumes as items come, so its grants keep the executor going.
        assert yields.take(), "the executor would stall: no credit came back"
        meaning = receive(client, wire.to_client(Kind.YIELD, id, n))
        assert meaning == Item(id, n)
        received.append(meaning.value)
        grant = stream.window.consume()
        if grant:
            assert grant == STREAM_WINDOW // 2
            assert yields.grant(wire.to_executor(Kind.CREDIT, id, calls.credit_body(grant)).body) == grant
    assert received == list(range(40))
    assert receive(client, wire.to_client(Kind.END, id, calls.ends_body())) == StreamEnd(id, None)
    client.close_stream(id)
    assert receive(client, wire.to_client(Kind.YIELD, id, "late")) == Ignored(Kind.YIELD, id)


def test_the_executor_stops_at_the_window_without_credit():
    yields = Credit(STREAM_WINDOW)
    assert [yields.take() for _ in range(STREAM_WINDOW + 1)] == [True] * STREAM_WINDOW + [False]
    assert yields.grant(STREAM_WINDOW // 2) == STREAM_WINDOW // 2
    assert yields.available == STREAM_WINDOW // 2


def test_duplex_inputs_by_bytes():
    wire, client = Wire(), ClientCalls()
    id = client.new_id()
    stream = client.open_stream(id, duplex=True)
    inputs = Window(INPUT_WINDOW)  # the executor's input stream
    sent = 0
    while stream.inputs.take():
        assert inputs.receive()
        wire.to_executor(Kind.INPUT, id, sent)
        sent += 1
    assert sent == INPUT_WINDOW
    assert not inputs.receive()  # one more would be beyond the client's credit: refused
    granted = 0
    for _ in range(INPUT_WINDOW):
        grant = inputs.consume()
        if grant:
            meaning = receive(client, wire.to_client(Kind.CREDIT, id, calls.credit_body(grant)))
            assert meaning == Granted(id, grant)
            granted += grant
    assert granted == INPUT_WINDOW and stream.inputs.available == INPUT_WINDOW


def test_a_grant_never_lifts_credit_beyond_the_window():
    credit = Credit(INPUT_WINDOW)
    assert credit.grant(4) == 0  # full already
    credit.take()
    assert credit.grant(INPUT_WINDOW) == 1
    for bad in (0, -1, INPUT_WINDOW + 1, "8", True, None):
        assert credit.grant(bad) == 0
    assert credit.available == INPUT_WINDOW


def test_window_of_one_grants_every_item():
    window = Window(1)
    assert window.receive() and not window.receive()
    assert window.consume() == 1


def test_credit_for_a_stream_that_is_not_duplex_is_ignored():
    client = ClientCalls()
    id = client.new_id()
    client.open_stream(id)
    assert client.receive(Kind.CREDIT, id, 8) == Ignored(Kind.CREDIT, id)
    assert client.receive(Kind.CREDIT, 99, 8) == Ignored(Kind.CREDIT, 99)


def test_media_on_a_stream():
    client = ClientCalls()
    id = client.new_id()
    client.open_stream(id)
    announcement = {"kind": "audio", "format": {}, "start": 0, "pts": 0}
    assert client.receive(Kind.MEDIA, id, announcement) == Announcement(id, announcement)
    for bad in ({"slot": 1}, "audio"):
        meaning = client.receive(Kind.MEDIA, id, bad)
        assert isinstance(meaning, Failure) and meaning.error is None and meaning.reason
    assert client.receive(Kind.END, id, {"audio": {"end": 1}}) == StreamEnd(id, {"audio": {"end": 1}})
    assert client.receive(Kind.END, id, "garbled") == StreamEnd(id, None)


def test_errors_settle_their_call():
    wire, client = Wire(), ClientCalls()
    id = client.new_id()
    body = calls.error_body(ErrorCode.NO_METHOD, "Echo has no method 'x'")
    meaning = receive(client, wire.to_client(Kind.ERROR, id, body))
    assert meaning == Failure(id, calls.Error(ErrorCode.NO_METHOD, "Echo has no method 'x'"))
    meaning = client.receive(Kind.ERROR, id, "not a dict")
    assert isinstance(meaning, Failure) and meaning.error is None and "malformed error" in meaning.reason


def test_session_ended_only_after_the_welcome_and_on_id_0():
    client = ClientCalls()
    body = calls.error_body(ErrorCode.SESSION_ENDED, "shutting down")
    assert isinstance(client.receive(Kind.ERROR, 0, body), Failure)  # the handshake's answer
    assert client.receive(Kind.WELCOME, 0, calls.welcome_body("e", 10)) == Answer(0, {"executor": "e", "max_message_size": 10})
    client.welcomed = True
    assert client.receive(Kind.ERROR, 0, body) == SessionEnded("shutting down")
    assert isinstance(client.receive(Kind.ERROR, 5, body), Failure)


def test_requests_from_the_executor_are_unexpected():
    client = ClientCalls()
    for kind in (Kind.CALL, Kind.CREATE, Kind.HELLO, Kind.INPUT, Kind.CANCEL):
        assert client.receive(kind, 1, None) == Ignored(kind, 1, unexpected=True)


EXCEPTIONS = {
    ErrorCode.BAD_REQUEST: RemoteExecutionError,
    ErrorCode.UNAUTHORIZED: AuthenticationError,
    ErrorCode.TOO_LARGE: MessageTooLargeError,
    ErrorCode.TIMEOUT: RemoteTimeoutError,
    ErrorCode.MEMORY: ResourceLimitError,
    ErrorCode.OBJECTS: ResourceLimitError,
    ErrorCode.SERIALIZATION: SerializationError,
    ErrorCode.EXCEPTION: RemoteExecutionError,
    ErrorCode.RATE_LIMITED: ResourceLimitError,
    ErrorCode.SESSION_ENDED: RemoteExecutionError,  # off id 0 it is just an error
    ErrorCode.NO_OBJECT: RemoteExecutionError,
    ErrorCode.NO_METHOD: RemoteExecutionError,
    ErrorCode.CPU: ResourceLimitError,
    ErrorCode.TIME: ResourceLimitError,
    ErrorCode.NOT_ACCEPTED: RemoteExecutionError,
}


def test_every_code_maps_to_an_exception():
    assert set(EXCEPTIONS) == set(ErrorCode)


@pytest.mark.parametrize("code", list(ErrorCode), ids=str)
def test_exception_for(code):
    error = calls.parse_error(calls.error_body(code, "what happened", "pkg.Boom", "Traceback...", "missing_mod"))
    exc = exception_for(error, "gpu-1", lambda tb: tb + " (annotated)")
    assert type(exc) is EXCEPTIONS[code]
    assert "what happened" in str(exc)
    if isinstance(exc, ResourceLimitError):
        assert exc.limit == code.value
    if code is ErrorCode.SERIALIZATION:
        assert "missing_mod" in str(exc)
    if code is ErrorCode.EXCEPTION:
        assert exc.remote_type == "pkg.Boom" and exc.remote_traceback == "Traceback... (annotated)"
        assert "pkg.Boom: what happened" in str(exc)


def test_unknown_code_is_a_remote_execution_error():
    exc = exception_for(calls.parse_error({"code": "newer", "message": "m"}), "e")
    assert isinstance(exc, RemoteExecutionError) and exc.remote_type == "newer"


def test_a_list_passed_for_a_stream_gets_a_hint():
    error = calls.Error(ErrorCode.EXCEPTION, "'async for' requires an object with __aiter__ method, got list", "builtins.TypeError")
    assert "pass an iterator" in str(exception_for(error, "e"))


# -- the executor's side ----------------------------------------------------------------


def test_executor_serves_each_fresh_id_once():
    executor = ExecutorCalls()
    assert executor.receive(Kind.CALL, 7, calls.call_body(1, "f", [], {})) == Serve(7)
    again = executor.receive(Kind.CREATE, 7, b"pickle")
    assert isinstance(again, Refuse) and again.code is ErrorCode.BAD_REQUEST and "already in use" in again.reason
    executor.finished(7)
    assert executor.receive(Kind.RELEASE, 7, 1) == Serve(7)  # an id is free again once its call is over


def test_executor_routes_cancel_credit_and_inputs():
    wire, executor = Wire(), ExecutorCalls()
    assert executor.receive(Kind.CALL, 3, None) == Serve(3)
    yields = executor.open_stream(3, STREAM_WINDOW)
    while yields.take():
        pass
    credit = wire.to_executor(Kind.CREDIT, 3, calls.credit_body(STREAM_WINDOW // 2))
    assert executor.receive(credit.kind, credit.id, credit.body) == Resume(3)
    assert yields.available == STREAM_WINDOW // 2
    assert executor.receive(Kind.CREDIT, 3, 10**6) == Ignored(Kind.CREDIT, 3)  # beyond the window: no wake-up
    assert executor.receive(Kind.INPUT, 3, "x") == Feed(3, False)
    assert executor.receive(Kind.INPUT_END, 3, None) == Feed(3, True)
    assert executor.receive(Kind.CANCEL, 3, None) == Stop(3)
    executor.finished(3)
    assert not executor.running(3)
    assert executor.receive(Kind.INPUT, 3, "late") == Ignored(Kind.INPUT, 3)
    assert executor.receive(Kind.CREDIT, 3, 1) == Ignored(Kind.CREDIT, 3)


@pytest.mark.parametrize("kind", [Kind.RESULT, Kind.ERROR, Kind.YIELD, Kind.END, Kind.WELCOME, Kind.PONG])
def test_executor_refuses_what_is_not_a_request(kind):
    refusal = ExecutorCalls().receive(kind, 9, None)
    assert refusal == Refuse(9, ErrorCode.BAD_REQUEST, f"a {kind.name} is not a request")
