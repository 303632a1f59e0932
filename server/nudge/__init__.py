"""Nudge: a self-hosted, real-time engagement server.

Browsers stream what a visitor does over one WebSocket; a pure rule engine decides, the moment an
event arrives, whether an in-app message should be shown; the message goes back over the same socket.
"""

__version__ = "0.1.0"
