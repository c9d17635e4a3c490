"""
:class:`remotemedia.remote.tracebacks.SourceMap`: remote tracebacks of code
sent by value name the user's file and line. No network: the executor's
side is played by cloudpickle and the executor's own traceback formatter.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cloudpickle

from remotemedia.remote.tracebacks import SourceMap


ROOT = Path(__file__).resolve().parent.parent


class Faulty:
    """A class cloudpickle sends by value, whose method fails two calls deep."""

    def process(self, data):
        return self._check(data)

    def _check(self, data):
        if data < 0:
            raise ValueError(f"negative input {data}")
        return data

    @staticmethod
    def nested(data):
        def inner():
            return 1 / data

        return inner()


def remote_traceback(obj, method: str, *args) -> str:
    """
    The traceback text an executor sends for ``obj.method(*args)``, with
    ``obj`` sent by value. Unpickled in another process, as on an executor:
    in this one, cloudpickle would give back the original class.
    """
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    try:
        data = cloudpickle.dumps((obj, method, args))
    finally:
        cloudpickle.unregister_pickle_by_value(module)
    script = (
        "import sys, cloudpickle\n"
        "from executor.objects import error_body\n"
        "obj, method, args = cloudpickle.loads(sys.stdin.buffer.read())\n"
        "try:\n"
        "    getattr(obj, method)(*args)\n"
        "except Exception as exc:\n"
        "    sys.stdout.write(error_body(exc)['traceback'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], input=data, capture_output=True, cwd=ROOT, timeout=60, check=True
    )
    return done.stdout.decode()


def test_code_sent_by_value_has_no_file_on_the_executor():
    text = remote_traceback(Faulty(), "process", -1)
    assert 'File "<dynamic-code>"' in text
    assert "raise ValueError" not in text  # no source line either


def test_the_client_puts_back_the_file_and_the_source_line():
    sources = SourceMap()
    sources.add(Faulty())
    text = sources.annotate(remote_traceback(Faulty(), "process", -1))
    assert "<dynamic-code>" not in text
    assert f'File "{__file__}"' in text
    assert "return self._check(data)" in text
    assert 'raise ValueError(f"negative input {data}")' in text
    assert text.rstrip().endswith("ValueError: negative input -1")


def test_nested_functions_and_static_methods_are_found():
    sources = SourceMap()
    sources.add(Faulty())
    text = sources.annotate(remote_traceback(Faulty(), "nested", 0))
    assert "return 1 / data" in text
    assert "in inner" in text and "<dynamic-code>" not in text


def test_frames_of_code_the_client_did_not_send_are_left_as_they_are():
    text = 'Traceback (most recent call last):\n  File "<dynamic-code>", line 3, in elsewhere\nKeyError: 1\n'
    sources = SourceMap()
    sources.add(Faulty())
    assert sources.annotate(text) == text
    assert SourceMap().annotate("no traceback") == "no traceback"

