"""cloudpickle serialization of node instances, and its errors."""

from __future__ import annotations

import threading

import pytest

from remotemedia import Node, Pipeline, SerializationError
from remotemedia.serialization import dumps_object, loads_object


class Scale(Node):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def process(self, data: float) -> float:
        return data * self.factor


def test_a_node_round_trips_with_its_state_and_still_runs():
    node = loads_object(dumps_object(Scale(3.0)))
    assert node.factor == 3.0 and node.name == "Scale"
    assert Pipeline().add_node(node).run([1.0, 2.0]) == [3.0, 6.0]


def test_a_locally_defined_class_travels_by_value():
    class Local(Node):
        def process(self, data):
            return f"local:{data}"

    clone = loads_object(dumps_object(Local(name="here")))
    assert clone.process(1) == "local:1" and clone.name == "here"


def test_an_object_holding_a_lock_raises_serialization_error_naming_its_type():
    node = Scale(1.0)
    node.lock = threading.Lock()
    with pytest.raises(SerializationError, match="initialize") as info:
        dumps_object(node)
    assert info.value.type_name.endswith("Scale")
    assert isinstance(info.value.__cause__, TypeError)


def test_corrupt_bytes_raise_serialization_error():
    with pytest.raises(SerializationError):
        loads_object(b"\x80\x05not a pickle")
