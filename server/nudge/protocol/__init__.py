"""The wire protocol (docs/protocol.md): codecs and frames, sans-I/O.

Bytes or text in, plain values out, and back; the runtime moves them over sockets. May import
:mod:`nudge.errors` and :mod:`nudge.rules`; nothing of the runtime, the store or ops.
"""
