"""The change feed's lag as a client sees it: from a write's acknowledgement to its event.

Against a running cluster (nodes with --auth none, or COUNTERS_TOKEN set to a token with
counters:read and counters:write):

    .venv/bin/python loadtest/feed_lag.py http://127.0.0.1:7000 http://127.0.0.1:7001

writes through the first URL (300 increments over 30 counters, 10 ms apart, so that no two
writes of a counter fall in one coalescing interval) while an SSE stream on the second
reads the namespace's feed, and prints the lag's median, p95 and max.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import statistics
import sys
import time

import aiohttp

WRITES = 300
COUNTERS = 30


async def main(write_url: str, read_url: str) -> None:
    namespace = f"lag-{secrets.token_hex(3)}"
    token = os.environ.get("COUNTERS_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    acked: dict[tuple[str, int], float] = {}
    lags: list[float] = []
    async with aiohttp.ClientSession(headers=headers) as session:

        async def listen() -> None:
            url = f"{read_url}/v1/namespaces/{namespace}/events"
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=None)) as response:
                async for raw in response.content:
                    line = raw.decode()
                    if line.startswith("data: "):
                        data = json.loads(line[6:])
                        sent = acked.get((data["name"], data["value"]))
                        if sent is not None:
                            lags.append(time.monotonic() - sent)

        listener = asyncio.create_task(listen())
        await asyncio.sleep(0.5)  # the stream is open and has found every log's head
        for i in range(WRITES):
            name = f"c{i % COUNTERS}"
            path = f"{write_url}/v1/namespaces/{namespace}/counters/{name}/increment"
            async with session.post(path, json={"delta": 1}) as response:
                body = await response.json()
            acked[(name, body["value"])] = time.monotonic()
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.5)
        listener.cancel()
    lags.sort()
    print(
        f"{len(lags)} events for {WRITES} writes; lag from acknowledgement to SSE event: "
        f"median {statistics.median(lags) * 1000:.0f} ms, "
        f"p95 {lags[int(len(lags) * 0.95)] * 1000:.0f} ms, max {lags[-1] * 1000:.0f} ms"
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else sys.argv[1]))
