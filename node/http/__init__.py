"""The HTTP surface: client routes, admin and history routes, the peer WebSocket endpoint,
the one edge middleware, authentication, rate limits, validation, metrics and OpenAPI.

May import every other subpackage; nothing in `node` imports it except the root.
"""
