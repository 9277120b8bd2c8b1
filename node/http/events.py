"""GET /v1/namespaces/{ns}/events: the change feed as server-sent events (node/realtime).

Any node serves any namespace's feed: it follows its own log and every live peer's
(node/realtime/reader.py, stream.py say how and what a client sees). The tenant is the
token's (counters:read on the namespace), so a stream only ever holds its own tenant's
events. Bad input (namespace, prefix, Last-Event-ID) is a 400 before the stream opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

from aiohttp import web

from node.base.errors import InvalidEventId, TenantStreams, TooManyStreams
from node.http import auth, validation
from node.http.appkeys import CONFIG, FEED
from node.http.middleware import STREAM_OPENED
from node.obs import logs
from node.realtime.feed_log import BadPosition, decode_position
from node.realtime.stream import Follower, StreamTally, cutoff_frame

routes = web.RouteTableDef()
POLL_S = 0.2  # how often a stream reads the logs
SEND_BUFFER_BYTES = 64 * 1024
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # a proxy (nginx) must not buffer a stream
}


@routes.get("/v1/namespaces/{namespace:[^/]+}/events", allow_head=False)  # no stream for HEAD
async def events(request: web.Request) -> web.StreamResponse:
    namespace = validation.name(request.match_info["namespace"], "namespace")
    prefix = request.query.get("prefix", "")
    if prefix:
        validation.name(prefix, "prefix")
    raw_id = request.headers.get("Last-Event-ID")
    try:
        position = None if raw_id is None else decode_position(raw_id.strip())
    except BadPosition as error:
        raise InvalidEventId(str(error)) from None
    tenant = auth.principal(request, auth.READ, namespace).tenant
    feed = request.app[FEED]
    tally = feed.tally
    if tally.active >= tally.max_streams:
        raise TooManyStreams(f"this node serves {tally.max_streams} streams; ask another")
    held = tally.by_tenant.get(tenant, 0)
    if held >= tally.per_tenant:
        raise TenantStreams(f"this tenant holds {held} streams on this node, as many as it may")
    follower = Follower(feed.reader, (tenant, namespace), prefix, position, tally)
    response = web.StreamResponse(headers={**SSE_HEADERS, logs.TRACE_HEADER: logs.TRACE_ID.get()})
    tally.active += 1
    tally.by_tenant[tenant] = held + 1
    tally.opened += 1
    try:
        _bound_send_buffer(request)
        await response.prepare(request)
        request[STREAM_OPENED] = time.perf_counter()
        await _serve(request, response, follower, tally)
    except ConnectionError:
        pass  # the client went away: nothing to say, no one to say it to
    finally:
        tally.active -= 1
        left = tally.by_tenant[tenant] - 1
        if left:
            tally.by_tenant[tenant] = left
        else:
            del tally.by_tenant[tenant]
    return response


def _bound_send_buffer(request: web.Request) -> None:
    """A fixed kernel send buffer for the stream's socket: autotuned, it grows to megabytes
    for a client that stopped reading before a write stalls; fixed, a stream holds at most
    this (doubled by the kernel) plus the transport's 64 KiB before the cut-off."""
    sock = None if request.transport is None else request.transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)


async def _serve(
    request: web.Request, response: web.StreamResponse, follower: Follower, tally: StreamTally
) -> None:
    config = request.app[CONFIG]
    heartbeat_s, stall_s = config.events_heartbeat_s, config.events_stall_s
    await response.write(b"retry: 1000\n\n")
    if follower.tail:  # find where every log is now, and give it as the resume point
        await follower.next_frames()
        await response.write(follower.position_frame().encode())
    last_write = time.monotonic()
    while not tally.closing.is_set():
        transport = request.transport
        if transport is None or transport.is_closing():
            return  # the client hung up: no need to wait for a heartbeat to find out
        frames = await follower.next_frames()
        if not frames and time.monotonic() - last_write >= heartbeat_s:
            frames = [": keep-alive\n\n"]
        if frames:
            try:
                async with asyncio.timeout(stall_s):
                    await response.write("".join(frames).encode())
            except TimeoutError:
                await _cut_off(request, response, tally, stall_s)
                return
            last_write = time.monotonic()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(POLL_S):
                await tally.closing.wait()


async def _cut_off(
    request: web.Request, response: web.StreamResponse, tally: StreamTally, stall_s: float
) -> None:
    """A client that stopped reading: queue a last event after what it has not read, and
    close the connection once the transport has sent what it can."""
    tally.cut_off += 1
    reason = f"the client did not read for {stall_s:g}s; reconnect with the last event id"
    # The write queues the frame before it waits for the buffer to drain, so a short wait
    # is enough for the frame to follow the rest.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(0.1):
            await response.write(cutoff_frame(reason).encode())
    if request.transport is not None:
        request.transport.close()
    raise ConnectionResetError("slow consumer cut off")
