"""Ray on one machine, pinned to 127.0.0.1: nothing it starts listens on or talks to another address.

Passing `_node_ip_address="127.0.0.1"` is not enough: Ray rewrites a loopback address into the
machine's routable one whenever its cluster mode is on (the default on Linux). Turning that mode off
(`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, read at import, hence also the module constant) keeps every
Ray process on loopback. A multi-node cluster is started with `ray start`, not through this.
"""

from __future__ import annotations

import os
from typing import Any

LOOPBACK_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_NODE_IP_ADDRESS": "127.0.0.1",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def pin_ray_to_loopback() -> None:
    """Set the environment (inherited by every Ray process started later) and the imported constant."""
    os.environ.update(LOOPBACK_ENV)
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # in case ray was imported before the variable was set


def init_local_ray(num_cpus: int | None = None, **kwargs: Any) -> Any:
    """Start (or join) a local Ray instance on 127.0.0.1; returns the `ray` module."""
    pin_ray_to_loopback()
    import ray

    if not ray.is_initialized():
        from rlaif.cluster.reaper import watch_this_process

        kwargs.setdefault("include_dashboard", False)
        watch_this_process()  # what Ray starts now (agents included) goes when this process goes, however it ends
        ray.init(num_cpus=num_cpus, _node_ip_address="127.0.0.1", **kwargs)
    return ray
