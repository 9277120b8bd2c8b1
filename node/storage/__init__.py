"""Where counter state lives: the in-memory store, the durable replica and its backends
(Redis, standalone or Cluster, and SQLite), write-behind, and the node's incarnation.

May import `node.obs` and `node.base`. A backend imports only the interface in `durable`;
`backends.open_durable` picks one from the configuration.
"""
