"""The invoke path: ``POST /invoke/{fn_id}`` and ``ANY /t/{app_name}/{path}``.

Fn buffers the function's response on the LB (so a late error can still become a proper
status); so do we, up to `STREAM_AFTER_BYTES` (64 KiB): a bigger answer is sent as it comes
(`StreamedAnswer`), and a late error then cuts the connection. Lookups come from the TTL cache:
a warm call touches no database.

A request refused before a call exists (unknown fn, app or trigger, body over FN_MAX_REQUEST_SIZE,
not sent within FN_REQUEST_BODY_READ_TIMEOUT, or cut off by its client) has no call line and no call metric;
`InvokeApi.reject` gives it its own line and counter instead.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from typing import Any

from aiohttp import HttpVersion11, hdrs, web
from aiohttp.helpers import must_be_empty_body
from multidict import CIMultiDict

from fn_core import logfmt
from fn_core.api.body import BodyReader, defer_continue, send_continue
from fn_core.api.request_id import RequestIds
from fn_core.errors import APIError, ClientCancelled, RequestBodyTimeout, ServerTooBusy, ServiceReservationFailure
from fn_core.lb.agent import LBAgent, Placement, ShuttingDown, cut_by_stop
from fn_core.lb.call import CallTemplate, CallTemplates, collect_headers, response_headers, trigger_headers, trigger_response
from fn_core.lb.runner_client import ExecResult
from fn_core.models import Call
from fn_core.store.cache import CachedLookup
from fn_core.wire import CallOffer

CALL_ID_HEADER = "Fn-Call-Id"
INVOKE_PATH_PREFIXES = ("/invoke/", "/t/")
#: A streamed answer's client has the fn's timeout from the answer's start, plus this long, to take it all; a write
#: still waiting on the client then cuts its connection and ends the call. The runner's own deadline has passed by
#: then (its clock started before the answer did), so this covers only its last frames in flight and its end
ANSWER_DEADLINE_MARGIN_S = 5.0
#: SO_LINGER on, for 0 s: closing the socket sends a TCP reset, and drops what the kernel has not sent yet
RESET_ON_CLOSE = struct.pack("ii", 1, 0)
NORMAL_CLOSE = struct.pack("ii", 0, 0)

log = logging.getLogger(__name__)
# the logger of the per-call line (fn_plugins_builtin.call_log): operators read both in one place
calls_log = logging.getLogger("fn_core.calls")


class AnswerNotTaken(ClientCancelled):
    """A client that did not take its streamed answer within the call's deadline: ended as a client that went away."""

    message = "Client did not take the answer within the fn's timeout"


def error_response(err: APIError, call_id: str = "") -> web.Response:
    headers = dict(err.headers)
    if call_id:
        headers[CALL_ID_HEADER] = call_id
    return web.json_response({"message": err.message}, status=err.status, headers=headers)


class InvokeApi:
    def __init__(
        self,
        lookup: CachedLookup,
        agent: LBAgent,
        request_ids: RequestIds | None = None,
        read_body: BodyReader = web.BaseRequest.read,
    ) -> None:
        self.lookup = lookup
        self.agent = agent
        self.request_ids = request_ids  # FN_RID_HEADER: None when unset
        self.read_body = read_body  # bounded by FN_REQUEST_BODY_READ_TIMEOUT when set (`fn_core.api.body`)
        self.templates = CallTemplates()

    def add_routes(self, app: web.Application) -> None:
        """The invoke and trigger routes. Their "100 Continue" waits until the body is read, after the fn is looked
        up (`fn_core.api.body.defer_continue`), not the other routes' Expect handler."""
        app.router.add_post("/invoke/{fn_id}", self.invoke, expect_handler=defer_continue)
        app.router.add_route("*", "/t/{app_name}", self.trigger, expect_handler=defer_continue)
        app.router.add_route("*", "/t/{app_name}/{path:.*}", self.trigger, expect_handler=defer_continue)

    async def invoke(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        fn = await self.lookup.fn(request.match_info["fn_id"])  # an unknown one is refused by the middleware
        template = self.templates.get(await self.lookup.app(fn.app_id), fn)
        call = template.new_call(
            method=request.method,
            url=request_url(request),
            headers=collect_headers(request.headers.items()),
            detached=_is_detached(request),
        )
        return self._closing_said(await self._run(request, call, template, started, is_trigger=False))

    async def trigger(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        app = await self.lookup.app_by_name(request.match_info["app_name"])  # unknown ones: refused by the middleware
        source = "/" + request.match_info.get("path", "")
        trigger = await self.lookup.trigger_by_source(app.id, "http", source)
        template = self.templates.get(app, await self.lookup.fn(trigger.fn_id))
        url = request_url(request)
        call = template.new_call(
            method=request.method,
            url=url,
            headers=trigger_headers(request.headers.items(), request.method, url),
            detached=_is_detached(request),
            trigger=trigger,
        )
        return self._closing_said(await self._run(request, call, template, started, is_trigger=True))

    def _closing_said(self, response: web.StreamResponse) -> web.StreamResponse:
        """A call answered while the LB stops says `Connection: close`: the connection closes after it (as Go's
        Shutdown marks it), and a client would otherwise send its next request into a closing socket."""
        if self.agent.closing:
            response.force_close()
        return response

    async def _run(
        self, request: web.Request, call: Call, template: CallTemplate, started: float, *, is_trigger: bool
    ) -> web.StreamResponse:
        agent = self.agent
        placement = Placement()
        status = 500
        refused = False
        rid = self.request_ids.of(request) if self.request_ids is not None else ""
        task = asyncio.current_task()
        if task is not None:  # aiohttp runs each request in a task of its own: named, /debug/stacks says whose
            task.set_name(f"invoke {call.id}")
        agent.metrics.inflight += 1
        counted = True  # given back by this handler; a detached call's by its own task
        answer: StreamedAnswer | None = None
        try:
            try:
                if hdrs.EXPECT in request.headers:  # the fn is found: the client may send its body now
                    await send_continue(request)
                body = await self.read_body(request)
                offer = agent.prepare(call, template)
            except (web.HTTPRequestEntityTooLarge, RequestBodyTimeout):
                # the body did not come whole (too large, too slow): nothing has run and the client never sees
                # this call's id; the middleware refuses it, as a Content-Length 413
                refused = True
                raise
            except asyncio.CancelledError:
                # the body did not come whole either: nothing ran, and no client will see this call
                refused = True
                if agent.closing and task is not None and not task.cancelling():
                    # not a cancel: aiohttp's stop failed the read, and the client, still there, is answered
                    raise ShuttingDown() from None
                self.reject(request, ShuttingDown() if agent.closing else ClientCancelled(), started)  # it hung up
                raise
            except APIError as err:
                placement.error = err
                status = err.status
                return error_response(err, call.id)
            if call.type == "detached":
                counted = False  # handed to _detached's task, which gives it back when the stream ends
                accepted, placement = await self._detached(offer, body, started, rid)
                status = accepted.status
                return accepted
            # used only by an answer too big to hold
            answer = StreamedAnswer(request, call.id, call.timeout, task, is_trigger)
            try:
                await agent.place(offer, body, sink=answer, placement=placement)
                if answer.response is not None:  # it began (so the call was committed)
                    status = await answer.end(placement)
                    return answer.response
                status, response, chunks = _sync_response(call, placement, is_trigger)
            except APIError as err:  # the function's head is no answer to give (a trigger's bad Fn-Http-Status)
                placement.error = err  # nothing went to the client yet: an error answer, and the call's line says it
                status = err.status
                return error_response(err, call.id)
            if chunks:
                await _write_chunks(request, response, chunks)
            return response
        except asyncio.CancelledError:  # the client went away, or the stop grace ran out: the runner stream was cancelled
            if not refused and call.type != "detached":  # a detached call runs on and reports itself
                if answer is not None and answer.cut:
                    placement.error = AnswerNotTaken()
                else:
                    placement.error = cut_by_stop(placement) if agent.closing else ClientCancelled()
                status = placement.error.status
            raise
        finally:
            if counted:
                agent.metrics.inflight -= 1
            if answer is not None and answer.timer is not None:  # the answer ended before its deadline
                answer.timer.cancel()
            if not refused and (call.type != "detached" or placement.error is not None):
                # once the answer is written (aiohttp writes it in this same turn): not part of the client's wait
                asyncio.get_running_loop().call_soon(agent.finished, call, placement, status, started, rid)

    def reject(self, request: web.Request, err: APIError, started: float) -> web.Response:
        """Count and log an invoke/trigger request refused before a call exists; Fn's error answer, with no call id."""
        self.agent.metrics.observe_rejection(err.status)
        fields = {
            "method": request.method,
            "path": request.rel_url.raw_path,  # still percent-encoded, as the client sent it
            "status": err.status,
            "duration_ms": round((time.monotonic() - started) * 1000, 2),
            "error": err.message,
        }
        if self.request_ids is not None:
            fields["rid"] = self.request_ids.of(request)
        logfmt.log(calls_log, logging.INFO, "invoke rejected", fields)
        return error_response(err)

    async def _detached(self, offer: CallOffer, body: bytes, started: float, rid: str) -> tuple[web.Response, Placement]:
        """202 as soon as a runner has started the call; the stream runs on in the background."""
        call = offer.call
        loop = asyncio.get_running_loop()
        started_on_runner: asyncio.Future[ExecResult] = loop.create_future()

        def on_start(result: ExecResult) -> None:
            if not started_on_runner.done():
                started_on_runner.set_result(result)

        agent = self.agent
        # Fn's bounds: a runner within the detached placer timeout (else 503), and the whole stream
        # within that + the fn's timeout + FN_EXECUTION_HEADROOM, so a stuck runner cannot hold it for ever
        bound_s = agent.detached_placer_timeout_s + call.timeout + agent.execution_headroom_s

        async def run() -> Placement:
            placement = Placement()
            try:
                async with asyncio.timeout(bound_s):
                    await agent.place(offer, body, on_start, agent.detached_placer_timeout_s, placement=placement)
            except TimeoutError:
                # Fn: a deadline once the call went to a runner is the reservation failing (500), whether or not
                # it started there; one that never reached a runner is the placer's 503
                placement.error = ServiceReservationFailure() if placement.runner else ServerTooBusy()
            except asyncio.CancelledError:  # the LB's stop, at the end of its grace (`LBAgent.close`)
                placement.error = cut_by_stop(placement)
                agent.finished(call, placement, placement.error.status, started, rid)
                raise
            except Exception:  # a bug below: the call still ends once for the listeners (a count they keep stays right)
                placement.error = APIError()
                agent.finished(call, placement, placement.error.status, started, rid)
                raise
            error = placement.error or (placement.result.error if placement.result else None)
            agent.finished(call, placement, error.status if error else 202, started, rid)
            return placement

        def stream_ended(_: asyncio.Task[Placement]) -> None:
            agent.metrics.inflight -= 1

        task = asyncio.create_task(run())
        # the call's inflight count ends with its stream, long after the 202 (a callback: a task cancelled
        # unstarted runs no finally)
        task.add_done_callback(stream_ended)
        agent.keep(task)
        waiting: set[asyncio.Future[Any]] = {task, started_on_runner}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not started_on_runner.done():
            placement = task.result()
            error = placement.error or (placement.result.error if placement.result else None)
            if error is not None:
                return error_response(error, call.id), Placement()  # finished() already ran in the task
        started_on_runner.cancel()
        return web.Response(status=202, headers={CALL_ID_HEADER: call.id}), Placement()


def request_url(request: web.Request) -> str:
    """The call's ``url``: scheme, Host and the request target as sent, joined as Fn joins them. aiohttp's
    ``request.url`` parses the Host header and raises on a port it cannot read (``Host: x:99999999``); Go's server
    takes such a Host as it is (its characters are checked, as aiohttp's parser checks them)."""
    return f"{request.scheme}://{request.host}{request.rel_url.raw_path_qs}"


def _is_detached(request: web.Request) -> bool:
    return request.headers.get("Fn-Invoke-Type", "").lower() == "detached"


def _answer_head(result: ExecResult, call_id: str, is_trigger: bool) -> tuple[int, CIMultiDict[str]]:
    """The status and headers a client gets for the function's answer."""
    status = result.status or 200
    if is_trigger:
        status, headers = trigger_response(status, result.headers)
    else:
        headers = response_headers(result.headers)
    out = CIMultiDict(headers)
    out[CALL_ID_HEADER] = call_id
    return status, out


def _sync_response(call: Call, placement: Placement, is_trigger: bool) -> tuple[int, web.StreamResponse, list[bytes]]:
    """The response, and the body chunks still to write when there are several (else [])."""
    result = placement.result
    error = placement.error or (result.error if result else None)
    if error is not None or result is None:
        error = error or APIError()
        return error.status, error_response(error, call.id), []
    status, out = _answer_head(result, call.id, is_trigger)  # APIError: the function's head is no answer (the caller's)
    chunks = result.chunks
    if len(chunks) <= 1:
        return status, web.Response(status=status, body=chunks[0] if chunks else b"", headers=out), []
    # a big body goes out frame by frame, not joined: the LB holds it once, and less as it is sent
    response = web.StreamResponse(status=status, headers=out)
    response.content_length = sum(len(c) for c in chunks)
    result.chunks = []
    return status, response, chunks


async def _write_chunks(request: web.Request, response: web.StreamResponse, chunks: list[bytes]) -> None:
    await response.prepare(request)
    if must_be_empty_body(request.method, response.status):  # HEAD, 204, 304: the head only (aiohttp's write would send it)
        chunks.clear()
    chunks.reverse()
    while chunks:
        await response.write(chunks.pop())  # dropped once written (or buffered by the transport)
    await response.write_eof()


class StreamedAnswer:
    """A sync call's answer once it outgrows what the LB holds (`STREAM_AFTER_BYTES`): sent as it comes, chunked.

    Its status and headers are the function's, so a failure after they are sent (the runner lost, the
    function cut off) can no longer be an error answer: the client's connection is cut instead, before the
    last chunk, and the call ends with the error in its log line and metrics. HTTP/1.0 has no chunks (nginx
    proxies with it by default): there the body ends with the connection, so a connection closed before the
    answer's end (a failure, a cut, the LB's stop) is reset, which the client sees as an error and not as the
    end of a whole body. An answer that may have no body (HEAD, 204, 304) is its head alone; the runner's
    bytes are read and dropped.

    The runner's stream is read only as fast as the client takes the answer (the LB holds no more of it), so
    a client that stops reading would hold the call and the runner's stream for ever: a write still waiting on
    the client `ANSWER_DEADLINE_MARGIN_S` past the fn's timeout from the answer's start cuts the connection and
    cancels the call's handler, which resets the runner's stream.
    """

    __slots__ = ("request", "call_id", "timeout_s", "handler", "is_trigger", "response", "status", "gone", "headless",
                 "resets", "timer", "writing", "cut")

    def __init__(self, request: web.Request, call_id: str, timeout_s: float, handler: asyncio.Task | None,
                 is_trigger: bool) -> None:
        self.request = request
        self.call_id = call_id
        self.timeout_s = timeout_s  # the fn's
        self.handler = handler  # the request's task: cancelled, it ends the call and the runner's stream
        self.is_trigger = is_trigger
        self.response: web.StreamResponse | None = None
        self.status = 0
        self.gone = False  # the client's connection closed under a write (its handler is being cancelled)
        self.headless = False  # no body may follow this head
        self.resets = False  # HTTP/1.0: the connection is set to be reset if closed before the answer's end
        self.timer: asyncio.TimerHandle | None = None  # the answer's deadline, once it began
        self.writing = False  # a write waits on the client
        self.cut = False  # the client did not take the answer before its deadline

    async def begin(self, result: ExecResult) -> None:
        request = self.request
        self.status, headers = _answer_head(result, self.call_id, self.is_trigger)
        response = self.response = web.StreamResponse(status=self.status, headers=headers)
        if must_be_empty_body(request.method, self.status):
            self.headless = True
        else:
            if request.version >= HttpVersion11:
                response.enable_chunked_encoding()
            else:
                response.force_close()
                self.resets = _set_linger(request.transport, RESET_ON_CLOSE)
            # from the answer's start, not the call's arrival: the function's clock on the runner starts after a
            # cold start or a wait for room, and before its answer, so the runner's deadline has passed by then
            deadline_s = self.timeout_s + ANSWER_DEADLINE_MARGIN_S
            self.timer = asyncio.get_running_loop().call_later(deadline_s, self._deadline_passed)
        try:
            await response.prepare(request)
        except ConnectionResetError:  # the client left as its answer began: the call ends unseen, as for a write
            self.gone = True

    async def write(self, chunk: bytes) -> None:
        if self.gone or self.headless:
            return
        await self._send(chunk)

    async def _send(self, chunk: bytes | None) -> None:
        """Write ``chunk`` (None: the answer's end), waiting as long as the client takes to make room for it."""
        assert self.response is not None
        self.writing = True
        try:
            if chunk is None:
                await self.response.write_eof()
            else:
                await self.response.write(chunk)
        except ConnectionResetError:  # nothing for the runner's side to handle: the call ends unseen
            self.gone = True
        finally:
            self.writing = False

    def _deadline_passed(self) -> None:
        if not self.writing:
            # the LB waits on the runner, whose own deadline came first: its end (or loss) ends the call; a write
            # that waits on the client from now on is cut at the next look
            self.timer = asyncio.get_running_loop().call_later(ANSWER_DEADLINE_MARGIN_S, self._deadline_passed)
            return
        self.timer = None
        self.cut = True
        log.info("cut a connection: the answer of call %s was not taken within %g s of its start (the fn's timeout + "
                 "%g s)", self.call_id, self.timeout_s + ANSWER_DEADLINE_MARGIN_S, ANSWER_DEADLINE_MARGIN_S)
        self._close_connection()
        if self.handler is not None:  # as aiohttp does for a client gone, whether or not it will for this cut
            self.handler.cancel()

    def _close_connection(self) -> None:
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    async def end(self, placement: Placement) -> int:
        """Write what is left and the end; or cut the connection when the call failed after its answer began."""
        assert self.response is not None and placement.result is not None
        result = placement.result
        error = placement.error or result.error
        if self.gone:
            return ClientCancelled.status
        if error is not None:
            self._close_connection()
            return error.status
        chunks, result.chunks = result.chunks, []
        for chunk in chunks:
            await self.write(chunk)
        if not self.gone:
            await self._send(None)
        if self.gone:
            return ClientCancelled.status
        if self.resets:  # whole: the connection closes as usual, and what the kernel still holds reaches the client
            _set_linger(self.request.transport, NORMAL_CLOSE)
        return self.status


def _set_linger(transport: asyncio.BaseTransport | None, value: bytes) -> bool:
    """Set SO_LINGER on the client's socket; False when it has none (closed already)."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, value)
    except OSError:
        return False
    return True
