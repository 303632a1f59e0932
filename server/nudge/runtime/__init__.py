"""The runtime around the pure core: live sessions, sockets, timers and persistence.

The hub (the session registry), connections and the gateway at ``/ws``, the beacon, limits,
the scheduler (the only code that waits for time), graceful shutdown, campaign reload, the
relay between nodes, and the counters ``/metrics`` reads. May import :mod:`nudge.rules`,
:mod:`nudge.protocol`, :mod:`nudge.store`, :mod:`nudge.errors` and :mod:`nudge.identity`; never
:mod:`nudge.ops` or :mod:`nudge.calibrate`.
"""
