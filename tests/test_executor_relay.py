"""The relay guard between a client and its worker (executor/relay.py), with no network."""

from __future__ import annotations

from executor.inputs import INPUT_WINDOW
from executor.relay import RelayGuard
from remotemedia.rpc import ErrorCode, Kind


def test_a_call_has_a_window_of_inputs_and_gets_more_as_the_worker_grants():
    guard = RelayGuard(window=4, max_backlog=1 << 20)
    assert guard.request(Kind.CALL, 1, 100, 0) is None
    for _ in range(4):
        assert guard.request(Kind.INPUT, 1, 100, 0) is None
    guard.granted(1, 2)
    assert guard.request(Kind.INPUT, 1, 100, 0) is None
    assert guard.request(Kind.INPUT, 1, 100, 0) is None
    refusal = guard.request(Kind.INPUT, 1, 100, 0)
    assert refusal is not None and refusal.code == ErrorCode.BAD_REQUEST and refusal.cancel and not refusal.quiet
    assert "credit of 4" in refusal.reason
    # Later inputs of the refused call are dropped without another reply, its end too.
    assert guard.request(Kind.INPUT, 1, 100, 0).quiet
    assert guard.request(Kind.INPUT_END, 1, 0, 0).quiet
    assert guard.refused == 1


def test_the_default_window_is_the_clients():
    assert RelayGuard().window == INPUT_WINDOW


def test_inputs_of_calls_that_are_not_running_are_dropped_quietly():
    guard = RelayGuard()
    assert guard.request(Kind.INPUT, 9, 10, 0).quiet  # never called
    guard.request(Kind.CALL, 3, 10, 0)
    guard.reply(Kind.END, 3)  # the call is over
    assert guard.calls == 0
    assert guard.request(Kind.INPUT, 3, 10, 0).quiet
    assert guard.refused == 0  # late inputs are no offence


def test_credit_never_grows_beyond_a_window():
    guard = RelayGuard(window=2)
    guard.request(Kind.CALL, 1, 10, 0)
    guard.granted(1, 2)
    guard.granted(1, 1 << 20)  # nonsense from a broken worker is ignored
    assert guard.request(Kind.INPUT, 1, 10, 0) is None
    assert guard.request(Kind.INPUT, 1, 10, 0) is None
    assert guard.request(Kind.INPUT, 1, 10, 0).cancel


def test_requests_beyond_the_byte_bound_are_refused_but_one_always_passes():
    guard = RelayGuard(max_backlog=1000)
    assert guard.request(Kind.CALL, 1, 5000, 0) is None  # nothing waits: any size goes
    refusal = guard.request(Kind.CALL, 2, 600, 500)
    assert refusal is not None and refusal.code == ErrorCode.RATE_LIMITED and not refusal.cancel
    assert "not keeping up" in refusal.reason
    assert guard.request(Kind.CALL, 3, 400, 500) is None
    # An input refused for bytes breaks its call's input stream: cancelled, the rest dropped.
    refusal = guard.request(Kind.INPUT, 3, 900, 500)
    assert refusal.cancel
    assert guard.request(Kind.INPUT, 3, 1, 0).quiet


def test_every_final_reply_forgets_the_call():
    guard = RelayGuard()
    for id, kind in enumerate((Kind.RESULT, Kind.ERROR, Kind.END)):
        guard.request(Kind.CALL, id, 1, 0)
        guard.reply(Kind.YIELD, id)
        assert guard.calls == 1
        guard.reply(kind, id)
        assert guard.calls == 0
