"""counters-client: the Python client of Counters.

    async with AsyncClient("http://127.0.0.1:7000", token) as client:
        client.add("demo", "views")            # buffered, summed, batched, retried
        value = await client.incr("demo", "likes", 5)

`Client` is the same with blocking methods, for code without an event loop.
"""

from counters_client import errors
from counters_client.aio import AsyncClient, Listener, Stats
from counters_client.errors import BufferFull, CountersError, DeadlineExceeded
from counters_client.feed import Feed
from counters_client.realtime import Aggregate, ChangeEvent, Gap, Top, TopEntry, Windowed
from counters_client.sync import Client
from counters_client.topology import Topology, key_hash

__all__ = [
    "Aggregate",
    "AsyncClient",
    "BufferFull",
    "ChangeEvent",
    "Client",
    "CountersError",
    "DeadlineExceeded",
    "Feed",
    "Gap",
    "Listener",
    "Stats",
    "Top",
    "TopEntry",
    "Topology",
    "Windowed",
    "errors",
    "key_hash",
]
