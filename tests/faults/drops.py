"""Silent packet drops between chosen nodes: the partitions of a fault run.

A drop lives in the *receiving* node's namespace: with nftables, a set of blocked source
addresses and one rule `ip saddr @blocked drop` in an input-hook chain; without nftables, a
policy rule `ip rule add from <sender> blackhole` (incoming packets from the sender route
nowhere). Either way nothing is refused (no RST, no ICMP): connections hang, as they do when a
switch or a cable fails. Clients and the servers on the bridge (10.77.<run>.1) are never
dropped, so a client reaches every node during a partition.

`Drops.block(pairs)` sets the whole fault at once: `pairs` holds (receiver, sender) node
indexes; `Drops.heal()` clears it. Faults are shaped by the pure helpers below.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable

from tests.faults.netns import Network, NetworkError, run

Pairs = frozenset[tuple[int, int]]  # (receiver, sender): the receiver drops the sender's packets

TABLE = "counters_faults"
APT_TIMEOUT_S = 300.0  # seconds `apt-get install nftables` may take on a fresh CI machine


def cut(side_a: Iterable[int], side_b: Iterable[int]) -> Pairs:
    """Both directions between every node of side_a and every node of side_b."""
    a, b = list(side_a), list(side_b)
    return frozenset({(x, y) for x in a for y in b} | {(y, x) for x in a for y in b})


def one_way(senders: Iterable[int], receivers: Iterable[int]) -> Pairs:
    """Packets from `senders` to `receivers` vanish; the other direction still flows."""
    return frozenset((r, s) for s in senders for r in receivers)


def isolate(node: int, count: int) -> Pairs:
    return cut([node], [i for i in range(count) if i != node])


def bridge(middle: int, side_a: Iterable[int], side_b: Iterable[int]) -> Pairs:
    """`middle` sees both sides; the sides do not see each other."""
    a = [i for i in side_a if i != middle]
    b = [i for i in side_b if i != middle]
    return cut(a, b)


def ensure_nft() -> str | None:
    """The nft binary, installing nftables when missing; None when it cannot be had (the
    caller falls back to policy rules)."""
    found = shutil.which("nft")
    if found:
        return found
    try:
        run(["apt-get", "install", "-y", "nftables"], timeout=APT_TIMEOUT_S)
    except (NetworkError, FileNotFoundError):
        return None
    return shutil.which("nft")


class Drops:
    """The drop rules of one Network; `mode` is "nftables" or "ip-rule" (the fallback)."""

    def __init__(self, network: Network) -> None:
        self.network = network
        self.nft = ensure_nft()
        self.mode = "nftables" if self.nft else "ip-rule"
        self.blocked: Pairs = frozenset()
        for index in range(network.nodes):
            if self.nft:
                self._nft(index, f"add table inet {TABLE}")
                self._nft(
                    index,
                    f"add set inet {TABLE} blocked {{ type ipv4_addr; }}",
                )
                self._nft(
                    index,
                    f"add chain inet {TABLE} input "
                    "{ type filter hook input priority -10; policy accept; }",
                )
                self._nft(index, f"add rule inet {TABLE} input ip saddr @blocked drop")
        if not self.nft:
            self._check_fallback()

    def block(self, pairs: Pairs) -> None:
        """Make exactly `pairs` blocked (what was blocked before and is not in pairs heals)."""
        count = self.network.nodes
        for receiver, sender in pairs:
            if not (0 <= receiver < count and 0 <= sender < count) or receiver == sender:
                raise ValueError(f"bad pair {(receiver, sender)} for {count} nodes")
        for receiver in range(count):
            before = {s for r, s in self.blocked if r == receiver}
            after = {s for r, s in pairs if r == receiver}
            if before != after:
                self._set(receiver, before, after)
        self.blocked = frozenset(pairs)

    def heal(self) -> None:
        self.block(frozenset())

    def _set(self, receiver: int, before: set[int], after: set[int]) -> None:
        addresses = [self.network.address(s) for s in sorted(after)]
        if self.nft:
            command = f"flush set inet {TABLE} blocked"
            if addresses:
                command += f"; add element inet {TABLE} blocked {{ {', '.join(addresses)} }}"
            self._nft(receiver, command)
            return
        inner = self.network.exec_prefix(receiver)
        for sender in before - after:
            run([*inner, "ip", "rule", "del", "from", self.network.address(sender), "blackhole"])
        for sender in after - before:
            run([*inner, "ip", "rule", "add", "from", self.network.address(sender), "blackhole"])

    def _nft(self, index: int, command: str) -> None:
        assert self.nft is not None
        run([*self.network.exec_prefix(index), self.nft, command])

    def _check_fallback(self) -> None:
        """Without nftables the policy rule must work, or the run fails here, loudly."""
        inner = self.network.exec_prefix(0)
        probe = f"{self.network.gateway}"
        try:
            run([*inner, "ip", "rule", "add", "from", probe, "blackhole"])
            run([*inner, "ip", "rule", "del", "from", probe, "blackhole"])
        except NetworkError as error:
            raise NetworkError(
                "cannot drop packets: nftables is missing and could not be installed "
                f"(apt-get install -y nftables), and policy rules failed too: {error}"
            ) from None
