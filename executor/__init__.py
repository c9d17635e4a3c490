"""
The RemoteMedia executor: runs on a GPU host, dials out to the signaling
server, and runs the node instances that clients send it.

Not implemented yet: this package is a placeholder so that the project's
layout is in place (see DESIGN.md and the remote-execution issue).
"""

__all__: list[str] = []
