"""The Docker driver: runs each hot container through the Docker Engine (placeholder)."""

from __future__ import annotations

from fn_core import Driver, hookimpl


def _docker_driver(**kwargs):
    raise NotImplementedError("the docker driver is being written")


@hookimpl
def register_drivers():
    return [Driver(name="docker", factory=_docker_driver, description="Docker Engine: hot containers over a unix socket")]
