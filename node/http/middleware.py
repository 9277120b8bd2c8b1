"""The middleware every HTTP request passes: trace id, header limit, authentication,
problem+json for errors, and the request's metrics; and, when tracing is on, a span.

Each concern lives in its own module (logs, validation, auth, errors, metrics) and is called
from `edge` in that order. They are one middleware, not five, because aiohttp runs each
middleware as one more coroutine around the handler, resumed at every await of the request:
folding five into one gave a 3-node cluster about 8% more reads per second (wrk, medians of
three runs; loadtest/README.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from opentelemetry.trace import SpanKind

from node.base.errors import ClientError, CountersError, InvalidBody
from node.http import auth, bodies, validation
from node.http.appkeys import CLUSTER
from node.http.topology import EPOCH_HEADER
from node.obs import logs
from node.obs.metrics import UNMATCHED, Metrics
from node.obs.tracing import Tracing, trace_id_of

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("counters.errors")


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return UNMATCHED if resource is None else resource.canonical


def _tenant(request: web.Request) -> str:
    principal = request.get(auth.PRINCIPAL)
    return "" if principal is None else principal.tenant


STREAM_OPENED = "counters.stream_opened"  # perf_counter() when a streamed answer began


def edge(metrics: Metrics, authenticator: auth.Authenticator | None) -> Any:
    @web.middleware
    async def edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
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
            cluster = request.app.get(CLUSTER)
            if cluster is not None:  # lets a routing client see that its map is stale
                response.headers[EPOCH_HEADER] = str(cluster.state.current.epoch)
        # A stream (the change feed) counts the time to its opening, not its life
        seconds = request.get(STREAM_OPENED, time.perf_counter()) - started
        metrics.observe_request(
            _route(request), request.method, response.status, _tenant(request), seconds
        )
        return response

    return edge_middleware


def tracing(node_tracing: Tracing) -> Any:
    """A server span per client request; installed only when tracing is on."""

    @web.middleware
    async def trace(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/peer/"):
            return await handler(request)
        route = _route(request)
        parent = request.headers.get("traceparent")
        with node_tracing.span(f"{request.method} {route}", parent, SpanKind.SERVER) as span:
            assert span is not None
            logs.TRACE_ID.set(trace_id_of(span))
            span.set_attribute("http.request.method", request.method)
            span.set_attribute("http.route", route)
            response = await handler(request)
            span.set_attribute("http.response.status_code", response.status)
            tenant = _tenant(request)
            if tenant:
                span.set_attribute("counters.tenant", tenant)
            return response

    return trace


def problem_response(error: CountersError) -> web.Response:
    return web.Response(
        status=error.status,
        body=bodies.encode(error.to_problem()),
        content_type="application/problem+json",
        headers=error.headers(),
    )


def problem_for(request: web.Request, error: Exception) -> web.Response:
    """The problem+json answer to what a handler raised. An HTTP exception below 400 (a
    redirect) is raised again, for aiohttp to send as it is."""
    if isinstance(error, RequestPayloadError | HttpProcessingError):
        # A body that does not decompress (Content-Encoding) or breaks off: the client's
        # fault. The connection cannot carry another request, and aiohttp must not read on
        # to the body's end after the answer (it would raise the same error and log it).
        request.content.feed_eof()
        why = f"the request body cannot be read: {error.__cause__ or error}"
        response = problem_response(InvalidBody(why))
        response.force_close()
        return response
    if isinstance(error, CountersError):
        if log.isEnabledFor(logging.DEBUG):
            fields = {"status": error.status, "type": error.type, "path": request.path}
            log.debug("request refused", extra=fields)
        return problem_response(error)
    if isinstance(error, web.HTTPException):
        if error.status < 400:
            raise error
        client_error = ClientError(error.reason)
        client_error.status = error.status
        client_error.type = {404: "not-found", 405: "method-not-allowed", 413: "too-large"}.get(
            error.status, "bad-request"
        )
        client_error.title = error.reason
        response = problem_response(client_error)
        if "Allow" in error.headers:  # RFC 9110: a 405 says which methods would do
            response.headers["Allow"] = error.headers["Allow"]
        return response
    log.exception("unhandled error on %s %s", request.method, request.path, exc_info=error)
    return problem_response(CountersError())
