"""The fault suite (`make faults`; a short run is part of `pytest`): real node processes, each
in its own network namespace, under a seeded nemesis, with a checker of the promises.

- netns.py    the run's bridge and namespaces, torn down whatever happens
- drops.py    silent packet drops between chosen nodes (nftables, or policy rules)
- cluster.py  nodes in namespaces (the cluster harness's Node and Cluster), Redis, PostgreSQL
- workload.py concurrent clients at every consistency level; each op's outcome
- nemesis.py  the seeded schedule of faults and heals, and the loop that applies it
- checker.py  bounds, convergence, one ring; the availability table
- run.py      one run end to end; retries.py the exactly-once (Jepsen-style) retry check

Needs root (network namespaces, nftables): the machines that run the tests are root.
"""
