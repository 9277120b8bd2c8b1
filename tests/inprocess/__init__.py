"""In-process clusters: several nodes' coordinators, stores and gossip loops in one event loop,
wired by an in-memory transport that can delay, drop, duplicate and partition messages
(network.py), built and torn down by cluster.py. Fast, seeded tests of coordination and
hand-off live beside them (test_*.py)."""
