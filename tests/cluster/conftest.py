"""Fixtures of the cluster suite: private Redis Cluster and Sentinel deployments."""

from __future__ import annotations

from tests.support.redis_cluster import (  # noqa: F401
    redis_cluster,
    redis_cluster_factory,
)
from tests.support.redis_sentinel import redis_sentinel_factory  # noqa: F401
