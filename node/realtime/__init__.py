"""Real time: what changed, as it changes. The change tap drains the store's changed counters
a few times a second and hands them, as one array per turn, to what follows them (windowed
changes, aggregates and top-k, the change feed and its sinks).

May import `node.cluster`, `node.history`, `node.storage`, `node.obs` and `node.base`; not
`node.coordination`, its neighbour.
"""
