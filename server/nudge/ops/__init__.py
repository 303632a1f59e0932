"""What operators and site backends reach over HTTP, and the application that composes it all.

The Starlette app (the composition root), the admin API, server events (``POST /api/events``),
erasure, webhooks out, the dashboard, results and their statistics, structured logs. The top
layer: may import every other; nothing imports it but :mod:`nudge.cli`.
"""
