"""Counter history: the model and store interface, the recorder loop, the PostgreSQL and
SQLite backends, and the schema migrations shipped in `sql/`.

May import `node.storage`, `node.obs` and `node.base`; not `node.cluster`, its neighbour.
A backend imports only the interface in `model`; `backends.open_history` picks one.
"""
