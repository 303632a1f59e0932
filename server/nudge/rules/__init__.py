"""The rules: campaigns and the pure engine that decides on them.

Campaign files and their validation (``campaigns``), property conditions (``conditions``), who a
campaign is for (``audience``), message content (``content``), the events a visitor may send
(``events``), the state kept of visitors and sessions (``state``), what the engine decides
(``decisions``) and the engine itself (``engine``).

Sans-I/O: plain data in, decisions out; no awaits, no clock reads, no store. May import only
:mod:`nudge.errors` and the standard library (and Jinja2/PyYAML for content and files).
"""
