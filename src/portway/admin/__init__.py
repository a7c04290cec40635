"""The admin API: health, readiness, config, routes, services, live stats, Prometheus metrics and
the dashboard page (``portway top`` is its terminal twin).

Served on its own listener (``admin.address``), by its own process under ``portway run`` or from a
thread of a single-process ``Gateway``. Workers publish reports (``report``); ``aggregate`` sums
them; ``metrics`` defines every metric; ``views`` and ``openapi`` shape the JSON; ``server`` serves
it; ``process`` is the admin process's main.
"""
