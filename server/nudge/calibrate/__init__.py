"""Calibration: what the server received and decided, recorded, and played back.

The event log (``recording``), ``nudge replay`` (``replay``) and its report, and the simulator.
May import :mod:`nudge.rules` and :mod:`nudge.store`; the runtime is handed a recorder, it does
not import this package.
"""
