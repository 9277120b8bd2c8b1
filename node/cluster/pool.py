"""The peer pool: one outgoing link per peer address (links.py), made on first use, closed
when the peer leaves the cluster or the node stops."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp

from node.base.config import Config
from node.cluster.links import PeerLink, ShareOf


class PeerPool:
    """One link per peer address, created on first use."""

    def __init__(
        self,
        config: Config,
        share_of: ShareOf,
        frame_observer: Callable[[str], Callable[[float], object]] | None = None,
    ) -> None:
        self._config = config
        self._share_of = share_of
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True),
            timeout=aiohttp.ClientTimeout(total=None, connect=2.0, sock_connect=1.0),
        )
        self._links: dict[str, PeerLink] = {}
        # peer address -> what to call with the seconds from a frame to its reply (metrics)
        self._frame_observer = frame_observer

    def link(self, address: str) -> PeerLink:
        link = self._links.get(address)
        if link is None:
            observer = self._frame_observer
            link = PeerLink(
                address,
                self._session,
                self._config,
                self._share_of,
                None if observer is None else observer(address),
            )
            self._links[address] = link
        return link

    def reachable(self, address: str) -> bool:
        """False while our link to `address` is dead (its peer stopped answering us), whatever
        we hear from that peer: liveness is judged per direction."""
        link = self._links.get(address)
        return link is None or not link.dead

    def links(self) -> list[PeerLink]:
        return list(self._links.values())

    def backlog(self) -> int:
        return sum(link.backlog for link in self._links.values())

    async def keep_only(self, addresses: set[str]) -> list[str]:
        """Close the links to every other address (nodes removed from the cluster), so
        their connections and tasks do not stay for the life of the node. A link with a
        request in flight is left for a later call: it may be an operator's admission of a
        node that is not a member yet."""
        gone = [a for a, link in self._links.items() if a not in addresses and not link.busy]
        links = [self._links.pop(address) for address in gone]
        await asyncio.gather(*(link.close("peer left the cluster") for link in links))
        return gone

    async def close(self) -> None:
        # All at once: each close may wait up to a second for a peer that is stopping too,
        # and a node must exit well within its orchestrator's grace period.
        await asyncio.gather(*(link.close() for link in list(self._links.values())))
        await self._session.close()
