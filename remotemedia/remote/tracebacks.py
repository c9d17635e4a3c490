"""
Remote tracebacks that point at the user's own file and line.

A class defined in a script or a notebook travels by value (cloudpickle),
and cloudpickle renames the file of every code object it sends to
``<dynamic-code>`` (so that its payload does not depend on where the code
was defined). The executor's traceback then says ``File "<dynamic-code>",
line 12, in process`` with no source line. The line numbers are still
right, and the client still has the code it sent: :class:`SourceMap` keeps
the code objects of every object the client uploads and puts the real file
name and source line back into the traceback's text.

Sans-I/O: it only reads code objects and :mod:`linecache`.
"""

from __future__ import annotations

import inspect
import linecache
import re
import types
from typing import Any, Iterator

__all__ = ["SourceMap"]

#: What cloudpickle writes in place of the file name of code sent by value.
DYNAMIC_FILE = "<dynamic-code>"

_FRAME = re.compile(r'^(?P<indent>\s*)File "<dynamic-code>", line (?P<line>\d+), in (?P<name>\S+)\s*$')


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _functions_of(cls: type) -> Iterator[types.FunctionType]:
    for klass in inspect.getmro(cls):
        if klass is object:
            continue
        for value in vars(klass).values():
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            elif isinstance(value, property):
                yield from (f for f in (value.fget, value.fset, value.fdel) if isinstance(f, types.FunctionType))
                continue
            if isinstance(value, types.FunctionType):
                yield value


class SourceMap:
    """The code a client uploaded, by function name, to annotate remote tracebacks."""

    def __init__(self) -> None:
        self._by_name: dict[str, list[types.CodeType]] = {}
        self._classes: set[type] = set()

    def add(self, obj: Any) -> None:
        """Remember the code of ``obj``'s class (its bases and nested functions included)."""
        cls = type(obj)
        if cls in self._classes:
            return
        self._classes.add(cls)
        for function in _functions_of(cls):
            for code in _code_objects(function.__code__):
                # A class that came back by value from an executor has
                # unnamed code too (cloudpickle updates the original class).
                if code.co_filename != DYNAMIC_FILE:
                    self._by_name.setdefault(code.co_name, []).append(code)

    def _find(self, name: str, line: int) -> types.CodeType | None:
        for code in self._by_name.get(name, ()):
            lines = [n for _, _, n in code.co_lines() if n is not None]
            if lines and min(lines) <= line <= max(lines) or code.co_firstlineno == line:
                return code
        return None

    def annotate(self, text: str) -> str:
        """``text`` (a formatted traceback) with ``<dynamic-code>`` frames named by their file and source line."""
        if DYNAMIC_FILE not in text:
            return text
        out: list[str] = []
        for raw in text.splitlines(keepends=True):
            match = _FRAME.match(raw)
            code = match and self._find(match["name"], int(match["line"]))
            if not code:
                out.append(raw)
                continue
            number = int(match["line"])
            indent = match["indent"]
            out.append(f'{indent}File "{code.co_filename}", line {number}, in {match["name"]}\n')
            # The executor had no source for it, so no source line follows.
            source = linecache.getline(code.co_filename, number).strip()
            if source:
                out.append(f"{indent}    {source}\n")
        return "".join(out)
