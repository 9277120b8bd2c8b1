"""The one middleware every HTTP request passes: trace id, header limit, authentication,
problem+json for errors, and the request's metrics.

Each concern lives in its own module (logs, validation, auth, errors, metrics) and is called
from here in that order. They are one middleware, not five, because aiohttp runs each
middleware as one more coroutine around the handler, resumed at every await of the request:
folding five into one gave a 3-node cluster about 8% more reads per second (wrk, medians of
three runs; loadtest/README.md).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from node import auth, logs, validation
from node.errors import problem_for
from node.metrics import Metrics

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def middleware(metrics: Metrics, authenticator: auth.Authenticator | None) -> Any:
    @web.middleware
    async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        logs.start_trace(request)
        try:
            validation.headers(request)
            auth.authenticate(request, authenticator)
            response = await handler(request)
        except Exception as error:
            response = problem_for(request, error)
        if request.path.startswith("/peer/"):
            return response  # a peer link lives as long as the node: no latency to count
        if not response.prepared:
            response.headers[logs.TRACE_HEADER] = logs.TRACE_ID.get()
        metrics.observe_request(request, response.status, time.perf_counter() - started)
        return response

    return edge
