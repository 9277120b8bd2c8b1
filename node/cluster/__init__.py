"""The cluster: membership and ring state, the peer wire protocol, peer authentication,
outgoing peer links, gossip with anti-entropy, and hand-off and recovery.

May import `node.storage`, `node.obs` and `node.base`; not `node.history`, its neighbour.
"""
