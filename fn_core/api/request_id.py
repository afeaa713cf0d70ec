"""Fn's ``FN_RID_HEADER``: each request's id comes from the client's header of that name, or is made here.

Every response carries it back in the same header: invoke, triggers, /v2 and errors alike. It is
set in ``on_response_prepare``, the one place every response passes before its headers go out
(a big invoke answer is streamed by its handler, past any middleware). The LB's own log line
for a refused invoke shows it too. With no header configured nothing is installed: no cost.
"""

from __future__ import annotations

from aiohttp import web

from fn_core.store.base import new_id

_RID = web.RequestKey("fn_core.rid", str)


class RequestIds:
    def __init__(self, header: str) -> None:
        self.header = header

    def install(self, app: web.Application) -> None:
        app.on_response_prepare.append(self._on_prepare)

    def of(self, request: web.Request) -> str:
        """This request's id: the client's, or a new one (an ULID, as Fn's); the same however often asked."""
        rid = request.get(_RID)
        if rid is None:
            rid = request[_RID] = request.headers.get(self.header) or new_id()
        return rid

    async def _on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers[self.header] = self.of(request)
