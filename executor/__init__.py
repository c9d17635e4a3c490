"""
The RemoteMedia executor: runs on a GPU host, dials out to the signaling
server, and runs the objects that clients send it.

Modules, each named after its concept: :mod:`executor.executor` (the
``Executor``: registering and accepting sessions), :mod:`executor.session`
(one client's RPC session: peer connection and authentication),
:mod:`executor.registry` (the named services an executor offers),
:mod:`executor.service_session` (one browser's or node's session with a
named service), :mod:`executor.gpu` (whether the host has a GPU), :mod:`executor.dispatch` (answering a
session's requests), :mod:`executor.objects` (a session's objects),
:mod:`executor.inputs` (the input side of duplex streams),
:mod:`executor.process` and :mod:`executor.sandbox` (the worker process of a
session in ``process`` mode), :mod:`executor.isolation` (how workers are
confined), :mod:`executor.forkserver` (forking them from a warm interpreter),
:mod:`executor.pool` (the spare ones) and :mod:`executor.worker` (a session's
thread).
Run it with ``python -m executor --signaling ws://HOST:PORT``.
"""

__all__: list[str] = []
