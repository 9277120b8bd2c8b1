"""Observability: JSON logs with trace ids, Prometheus tallies, OpenTelemetry tracing.

May import `node.base` only; every other layer may import it, so its parts record what
happens without knowing who reads it.
"""
