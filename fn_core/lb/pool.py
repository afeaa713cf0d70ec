"""The static runner pool: one long-lived `RunnerClient` per configured address, plus any
in-process runners (`LocalRunner`, for `fn-core serve`) first.

When the selected placer wants runner status, a background task polls every runner's
``Status`` each ``status_poll_ms``, keeps the latest in `RunnerRef.status` and tells the
LB-side `runner_status` listeners.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from fn_core.lb.hooks import run_isolated
from fn_core.lb.runner_client import RunnerClient, channel_credentials
from fn_core.records import RunnerRef

if TYPE_CHECKING:
    from fn_core.lb.local_runner import LocalRunner

log = logging.getLogger(__name__)


class RunnerPool:
    def __init__(self, addresses: list[str], config, pm, local: list[LocalRunner] | None = None) -> None:
        credentials = channel_credentials(config)
        if credentials is None and addresses:
            log.info("runner channels are not encrypted (set node_cert_authority for TLS)")
        self.pm = pm
        self.poll_s = config.status_poll_ms / 1000
        # placers get this same list on every pass; they must not mutate it
        self.refs: list[RunnerRef] = [RunnerRef(address=r.address, handle=r) for r in local or ()]
        self.refs += [RunnerRef(address=a, handle=RunnerClient(a, credentials)) for a in dict.fromkeys(addresses)]
        self._poller: asyncio.Task | None = None

    def start(self) -> None:
        placer = self.pm.placer
        if placer is not None and placer.wants_runner_status and self.refs:
            self._poller = asyncio.create_task(self._poll_forever(), name="runner-status-poller")

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.gather(*(self._poll(ref) for ref in self.refs))
            await asyncio.sleep(self.poll_s)

    async def _poll(self, ref: RunnerRef) -> None:
        try:
            status = await ref.handle.status(timeout_s=max(self.poll_s, 1.0))
        except Exception as exc:  # an unreachable runner has no status; placers see None
            log.debug("status of runner %s: %s", ref.address, exc)
            ref.status = None
            return
        ref.status = status
        run_isolated(self.pm.hook.runner_status, status=status, runner=ref.address)

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        await asyncio.gather(*(ref.handle.close() for ref in self.refs), return_exceptions=True)
