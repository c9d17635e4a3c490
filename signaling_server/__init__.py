"""
The RemoteMedia signaling server: pairs clients with executors and relays
their WebRTC offers, answers and ICE candidates. No media or call traffic
passes through it.

Not implemented yet: this package is a placeholder so that the project's
layout is in place (see DESIGN.md and the signaling issue).
"""

__all__: list[str] = []
