"""
Remote execution: run an object on an executor and call it through a proxy.

- :class:`RemoteExecutorConfig` (:mod:`remotemedia.remote.config`): where the
  signaling server is, and the session's limits;
- :class:`RemoteProxyClient` (:mod:`remotemedia.remote.client`): one session
  with one executor;
- :class:`RemoteProxy` (:mod:`remotemedia.remote.proxy`): a remote object;
- :class:`RemoteObjectExecutionNode` (:mod:`remotemedia.remote.node`): a
  pipeline node whose object runs on an executor; a pipeline run opens its
  sessions with :mod:`remotemedia.remote.sessions`;
- :class:`RemoteServiceNode` (:mod:`remotemedia.remote.service`): a named
  service of an executor (what browsers use), as a pipeline node;
- :class:`SessionPool` (:mod:`remotemedia.remote.pool`): warm sessions lent
  run after run.
"""

from .client import RemoteProxyClient
from .config import RemoteExecutorConfig
from .node import RemoteObjectExecutionNode
from .pool import SessionPool, default_pool
from .proxy import RemoteCall, RemoteProxy
from .service import RemoteServiceNode

__all__ = ["RemoteExecutorConfig", "RemoteProxyClient", "RemoteProxy", "RemoteCall", "RemoteObjectExecutionNode", "RemoteServiceNode", "SessionPool", "default_pool"]
