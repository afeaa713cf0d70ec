"""Fixtures of the built-in plugins' tests."""

from __future__ import annotations

import secrets
from typing import Any

import pytest


@pytest.fixture
def two_networks(docker_client: Any) -> Any:
    """Two Docker networks of this test's own, removed after it (only they: the engine may be shared).
    Ask for it before the platform, so that it is removed after the platform's containers."""
    tag = f"fn-core-test-{secrets.token_hex(4)}"
    made = [docker_client.networks.create(f"{tag}-{side}", labels={"fn-agent-classifier": tag}) for side in "ab"]
    yield [n.name for n in made]
    in_use = []
    for network in made:
        try:
            network.remove()
        except Exception as exc:  # still in use: try the other one, then say so
            in_use.append(f"{network.name}: {exc}")
    assert not in_use, in_use
