"""The session's Redis Cluster and PostgreSQL (tests/integration/conftest.py), for the node
that tests/deploy/test_compose_node.py runs with the compose file's environment."""

from tests.integration.conftest import postgres_server, redis_cluster  # noqa: F401
