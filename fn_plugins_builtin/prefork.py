"""Fn's experimental prefork pool (``FN_EXPERIMENTAL_PREFORK_*``): network namespaces made ahead of time.

Docker spends most of a container's start setting up its network (on the dev machine ~180 of ~320 ms
with the default bridge). With ``FN_EXPERIMENTAL_PREFORK_POOL_SIZE=N`` the runner keeps N idle "donor"
containers (``FN_EXPERIMENTAL_PREFORK_IMAGE`` running ``FN_EXPERIMENTAL_PREFORK_CMD``, on the networks
of ``FN_EXPERIMENTAL_PREFORK_NETWORKS``), and a new hot container joins the network namespace of a free
one (``network_mode: container:<donor>``) instead of getting its own. While it lives, that donor is lent
to it alone. When it goes, the donor is free again, or, with ``FN_EXPERIMENTAL_PREFORK_USE_ONCE``,
removed and replaced, so that no function ever sees a namespace another one used. With no donor free
(or a donor gone bad) a container is started with its own network, as without the pool.

Donors carry the runner's labels, so a runner's start-up removes those a killed runner left. All
engine calls here block: the driver runs them in worker threads.
"""

from __future__ import annotations

import logging
import shlex
from typing import Any

from fn_core.errors import ConfigError

log = logging.getLogger(__name__)

DONOR_LABEL = "fn-prefork"


class PreforkPool:
    """The donors of one runner: which are free, which a launch holds, and which hot container has each lent one."""

    def __init__(self, config: Any, labels: dict[str, str]) -> None:
        self.size: int = config.prefork_pool_size
        self.image: str = config.prefork_image
        self.command = shlex.split(config.prefork_cmd)
        self.use_once: bool = config.prefork_use_once
        self.networks: list[str] = list(config.prefork_networks)
        self.labels = {**labels, DONOR_LABEL: "1"}
        self.free: list[str] = []
        self.held: set[str] = set()  # taken by a launch under way
        self.lent: dict[str, str] = {}  # hot container id -> its donor's id
        self.making = 0

    # --- in the event loop: no engine call -----------------------------------------------------
    def take(self) -> str | None:
        """A free donor's id for the next container (None: none free, start it with its own network)."""
        if not self.free:
            return None
        donor = self.free.pop()
        self.held.add(donor)
        return donor

    def lend(self, donor: str, container_id: str) -> None:
        """The launch that took ``donor`` made ``container_id`` in its namespace."""
        self.held.discard(donor)
        self.lent[container_id] = donor

    def give_back(self, donor: str) -> None:
        """The launch failed for a reason of its own: the donor is free again."""
        self.held.discard(donor)
        self.free.append(donor)

    def drop(self, donor: str) -> None:
        """The donor went bad (its container would not start in it): it leaves the pool."""
        self.held.discard(donor)

    def returned(self, container_id: str, reusable: bool = True) -> str | None:
        """The container is gone: its donor is free again, or (use-once, or not ``reusable``: the engine may
        still have the container) the donor to remove instead."""
        donor = self.lent.pop(container_id, None)
        if donor is not None and reusable and not self.use_once:
            self.free.append(donor)
            return None
        return donor

    def missing(self) -> int:
        return self.size - len(self.free) - len(self.held) - len(self.lent) - self.making

    def all(self) -> list[str]:
        return [*self.free, *self.held, *self.lent.values()]

    # --- in a worker thread: engine calls ----------------------------------------------------
    def make(self, client: Any) -> str:
        """Create and start one donor; its id."""
        import docker.errors

        try:
            container = client.containers.create(
                self.image, entrypoint=self.command, labels=self.labels, network=self.networks[0] if self.networks else None,
                read_only=True, cap_drop=["ALL"], security_opt=["no-new-privileges"], init=True,
            )
        except docker.errors.ImageNotFound:
            raise ConfigError(
                f"FN_EXPERIMENTAL_PREFORK_IMAGE {self.image!r} is not on this Docker engine (and could not be pulled)"
            ) from None
        except docker.errors.APIError as exc:
            raise ConfigError(f"FN_EXPERIMENTAL_PREFORK_*: Docker could not create a donor: {exc.explanation or exc}") from None
        try:
            for name in self.networks[1:]:
                client.networks.get(name).connect(container)
            container.start()
        except docker.errors.APIError as exc:
            container.remove(force=True)
            raise ConfigError(f"FN_EXPERIMENTAL_PREFORK_*: a donor of {self.image!r} did not start: {exc.explanation or exc}") from None
        return container.id

    @staticmethod
    def remove(client: Any, donor: str) -> None:
        import docker.errors

        try:
            client.api.remove_container(donor, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            log.warning("could not remove prefork donor %s: %s", donor[:12], exc.explanation or exc)
