"""The key of a counter: (tenant, namespace, name), the same tuple everywhere in the node."""

Key = tuple[str, str, str]
