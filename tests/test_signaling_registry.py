"""
The signaling server's registry of executors and sessions: which executor a
pairing gets, and why none when none fits.
"""

from __future__ import annotations

from signaling_server.registry import ExecutorRecord, Registry
from remotemedia.signaling.messages import TO_SERVER, validate


def test_registry_records_sessions_and_frees_them():
    registry = Registry()
    record = ExecutorRecord(name="e", conn="c1", capacity=2)
    registry.add_executor(record)
    session = registry.open_session("s1", "client", record)
    assert record.free == 1 and session.other_end("client") == "c1" and session.other_end("c1") == "client"
    assert session.other_end("someone") is None
    registry.close_session("s1")
    assert record.free == 2
    registry.open_session("s2", "client", record)
    assert [s.id for s in registry.remove_executor("e")] == ["s2"]
    assert registry.sessions == {}


def test_sessions_an_executor_reports_count_against_its_capacity():
    # After a restart of the server, an executor still serves sessions this registry never paired.
    registry = Registry()
    record = ExecutorRecord(name="e", conn="c1", capacity=3)
    registry.add_executor(record)
    record.reported_sessions = 2
    assert record.free == 1
    registry.open_session("s1", "client", record)
    assert record.free == 1  # the new one is among those it will report
    record.reported_sessions = 3
    assert record.free == 0 and registry.choose({}) is None


def test_avoided_executors_are_chosen_only_when_no_other_matches():
    registry = Registry()
    roomy = ExecutorRecord(name="roomy", conn="c1", capacity=8)
    small = ExecutorRecord(name="small", conn="c2", capacity=1)
    registry.add_executor(roomy)
    registry.add_executor(small)
    assert registry.choose({}) is roomy
    assert registry.choose({"avoid": ["roomy"]}) is small
    registry.open_session("s1", "client", small)
    assert registry.choose({"avoid": ["roomy"]}) is roomy  # a preference, not a requirement
    assert validate({"type": "pair", "requirements": {"avoid": ["a", "b"]}}, TO_SERVER)["requirements"]["avoid"] == ["a", "b"]


def test_registry_choice_and_explanations_directly():
    registry = Registry()
    assert registry.choose({}) is None
    assert "no executor is registered" in registry.why_none({})
    a = ExecutorRecord(name="a", conn="ca", capacity=1, gpu=True)
    b = ExecutorRecord(name="b", conn="cb", capacity=1, load=0.1)
    registry.add_executor(a)
    registry.add_executor(b)
    assert (a.order, b.order) == (0, 1)
    assert registry.choose({}) is a  # equal free, a's load 0.0 < 0.1
    assert registry.choose({"gpu": True}) is a
    assert registry.choose({"executor": "b"}) is b
    assert registry.choose({"model": "m"}) is None
    assert "none of the 2 registered executors matches" in registry.why_none({"model": "m"})
    assert "model='m'" in registry.why_none({"model": "m"})
    registry.open_session("s", "client", a)
    assert registry.choose({"gpu": True}) is None
    assert "all 1 matching executors are at capacity" in registry.why_none({"gpu": True})
