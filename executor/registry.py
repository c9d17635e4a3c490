"""
Named services: nodes an executor builds for clients that cannot send
Python objects (browsers), or that would rather name what they want.

A service is a *factory*: ``factory(**options)`` returns a node (anything
:func:`~remotemedia.node.check_node` accepts), built for one session with the
options the client sent in its ``hello``. The executor announces the names
it offers to the signaling server, which pairs a ``pair`` request for a
service only with an executor that offers it. The session then feeds the
client's camera and microphone frames to the node and sends back what it
yields (see :mod:`executor.service_session` and ``signaling_server/PROTOCOL.md``).

A node may also have:

- ``configure(**options)``: options changed while it runs (``ValueError``
  or ``TypeError`` for bad ones);
- ``options()``: its options now (sent in ``welcome`` and ``configured``);
- ``choices``: allowed values of its options, by name (the page builds its
  controls from them);
- ``takes``: the kinds of frame it takes, ``("audio", "video")`` by default;
  frames of other kinds are not given to it.

Services are code the executor's operator chose, run in the executor's own
process: nothing from the client is unpickled in a service session.

The default set (:func:`default_services`): ``demo`` (video effects,
transcripts and talk-back: the browser demo), ``effects`` and
``transcribe``. ``--services module:attribute`` adds a user's own: the
attribute is a dict of name to factory, or one factory (named after the
attribute).
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any, Callable, Mapping

__all__ = ["Factory", "default_services", "load_services", "build"]

#: Makes a service's node for one session from the client's options.
Factory = Callable[..., Any]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def _demo(effect: str = "edges", transcribe: bool = True, talkback: bool = False) -> Any:
    from remotemedia.nodes.live import LiveDemoNode

    return LiveDemoNode(effect=effect, transcribe=transcribe, talkback=talkback)


def _effects(effect: str = "edges") -> Any:
    from remotemedia.nodes.live import LiveDemoNode

    return LiveDemoNode(effect=effect, transcribe=False, talkback=False, audio=False)


def _transcribe(talkback: bool = False) -> Any:
    from remotemedia.nodes.live import LiveDemoNode

    return LiveDemoNode(effect=None, transcribe=True, talkback=talkback)


def default_services() -> dict[str, Factory]:
    """The services every executor offers unless told otherwise."""
    return {"demo": _demo, "effects": _effects, "transcribe": _transcribe}


def load_services(spec: str) -> dict[str, Factory]:
    """
    The services named by ``module:attribute`` (the ``--services`` flag).

    ``ValueError`` with what to fix when the module cannot be imported, the
    attribute is missing, or it is neither a factory nor a dict of them.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"--services takes module:attribute (e.g. my_services:SERVICES), not {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"--services {spec}: cannot import {module_name!r}: {exc} (is it on PYTHONPATH?)") from exc
    try:
        target = getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"--services {spec}: module {module_name!r} has no attribute {attribute!r}") from None
    services = dict(target) if isinstance(target, Mapping) else {attribute: target}
    for name, factory in services.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(
                f"--services {spec}: {name!r} is not a service name (letters, digits, '_', '.', '-'; at most 128)"
            )
        if not callable(factory):
            raise ValueError(f"--services {spec}: service {name!r} is a {type(factory).__name__}, not a factory of nodes")
    return services


def build(factory: Factory, options: Any) -> Any:
    """
    The node ``factory`` makes with the client's ``options``.

    ``ValueError`` (told to the client as ``bad_options``) for options that
    are not a dict of names, or that the factory refuses; what else the
    factory raises is the service's own failure.
    """
    from remotemedia.node import check_node

    if options is None:
        options = {}
    if not isinstance(options, dict) or not all(isinstance(k, str) and k.isidentifier() for k in options):
        raise ValueError(f"options must be an object of option names to values, not {options!r}")
    try:
        inspect.signature(factory).bind(**options)
    except TypeError as exc:
        raise ValueError(f"bad options {options!r}: {exc}") from None
    except ValueError:
        pass  # no signature to check (a builtin): the factory decides
    node = factory(**options)
    check_node(node)
    return node
