"""OpenTelemetry traces, exported by OTLP/HTTP when --otlp-endpoint is set, otherwise off.

Spans: each client request (continuing the caller's W3C `traceparent`), its forward to the
coordinator, each replica write and read, the peer's handling of the frame that carried
them, durable-replica flushes and history writes. Context crosses the peer protocol as a
traceparent string at the end of a frame (node/cluster/wire.py); a group-committed frame carries
the context of one of the writes in it.

Off, `tracer` is None: the HTTP middleware (node/http/middleware.py) is not installed and
every helper returns at its first line, so tracing costs one None check where it would run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:  # the SDK is imported when tracing starts: a tenth of a node's imports
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

_PROPAGATOR = TraceContextTextMapPropagator()
EXPORT_TIMEOUT_S = 2.0  # per export: a collector that is down must not hold a node up


class Tracing:
    def __init__(self, tracer: Tracer | None = None, provider: TracerProvider | None = None):
        self.tracer = tracer
        self._provider = provider

    @classmethod
    def start(cls, node_id: str, endpoint: str, exporter: SpanExporter | None = None) -> Tracing:
        """Tracing to `endpoint` (an OTLP/HTTP base URL), or off when it is empty."""
        if not endpoint:
            return OFF
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            url = endpoint.rstrip("/") + "/v1/traces"
            exporter = OTLPSpanExporter(endpoint=url, timeout=EXPORT_TIMEOUT_S)
        resource = Resource.create({"service.name": "counters", "service.instance.id": node_id})
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        return cls(provider.get_tracer("counters"), provider)

    @contextlib.contextmanager
    def span(
        self,
        name: str,
        parent: str | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: dict[str, Any] | None = None,
    ) -> Iterator[Span | None]:
        """A current span (child of `parent`, a traceparent, when given), or None when off."""
        if self.tracer is None:
            yield None
            return
        context = _context_of(parent)
        with self.tracer.start_as_current_span(
            name, context=context, kind=kind, attributes=attributes
        ) as span:
            yield span

    def start_peer_span(self, name: str, peer: str) -> Span | None:
        """A client span under the current one for one exchange with a peer (end it with
        `end_with`), or None when off."""
        if self.tracer is None:
            return None
        attributes = {"counters.peer": peer}
        return self.tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)

    def traceparent(self, span: Span | None = None) -> str | None:
        """The W3C traceparent of `span` (or the current span) to send along, or None."""
        if self.tracer is None:
            return None
        carrier: dict[str, str] = {}
        context = None if span is None else set_span_in_context(span)
        _PROPAGATOR.inject(carrier, context=context)
        return carrier.get("traceparent")

    async def shutdown(self) -> None:
        """Export what is still buffered, in a thread: a collector that is down costs the
        stop at most EXPORT_TIMEOUT_S and never blocks the event loop."""
        if self._provider is not None:
            await asyncio.to_thread(self._provider.shutdown)


OFF = Tracing()


def end_with(span: Span, future: asyncio.Future[Any]) -> None:
    """End span when future is done, marked as an error if it failed."""

    def end(done: asyncio.Future[Any]) -> None:
        if done.cancelled() or done.exception() is not None:
            span.set_status(Status(StatusCode.ERROR, "no answer"))
        span.end()

    future.add_done_callback(end)


def _context_of(traceparent: str | None) -> Context | None:
    if not traceparent:
        return None
    return _PROPAGATOR.extract({"traceparent": traceparent})


def trace_id_of(span: Span) -> str:
    return format(span.get_span_context().trace_id, "032x")
