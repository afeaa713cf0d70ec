"""A function's stdout and stderr in the node's log, as Fn's full mode (`fn-core serve`) has them.

Each line a hot container writes becomes one debug line of the ``fn_core.function`` logger, with the
call the container was serving when the line reached the runner (output and response travel apart,
so a line written just before a response may be counted to the container's next call). A call's
lines stop at FN_MAX_LOG_SIZE_BYTES: one line says so and the rest of its output is dropped, so a
chatty function cannot flood the log nor hold memory. Off with FN_DISABLE_DEBUG_USER_LOGS, on a pure
runner (Fn drops output there: an app's ``syslog_url`` is the way to keep it), and when the logger is
above debug (nobody would read the lines: the driver keeps no attachment to the container once it is
ready; while it starts, its output is read only to tell when it exits, and dropped).
"""

from __future__ import annotations

import json
import logging

from fn_core.models import Call

log = logging.getLogger("fn_core.function")

#: a line is logged in pieces of at most this size (its end may never come)
MAX_LINE_BYTES = 64 * 1024


def wanted(serve: bool, disabled: bool) -> bool:
    """Whether a node logs its functions' output: in full mode, unless disabled, at debug level."""
    return serve and not disabled and log.isEnabledFor(logging.DEBUG)


class FunctionOutput:
    """One hot container's output: cut into lines, each logged with the call it belongs to.

    The driver feeds it (`write`, from the event loop) and ends it (`close`); the agent names the
    call the container serves (`begin_call`), which also renews the per-call allowance.
    """

    __slots__ = ("app_id", "fn_id", "call_id", "limit", "left", "_partial")

    def __init__(self, call: Call, limit: int) -> None:
        self.app_id = call.app_id
        self.fn_id = call.fn_id
        self.call_id = ""  # none yet: what the function prints as it starts
        self.limit = limit  # bytes per call, 0 = no limit
        self.left = limit
        self._partial: dict[str, bytes] = {}  # stream -> the start of a line whose end is still to come

    def begin_call(self, call_id: str) -> None:
        self.call_id = call_id
        self.left = self.limit

    def write(self, stream: str, data: bytes) -> None:
        """Bytes the container wrote to ``stream`` ("stdout" or "stderr")."""
        if self.limit and self.left <= 0:
            return
        data = self._partial.pop(stream, b"") + data
        *lines, rest = data.split(b"\n")
        for line in lines:
            if not self._emit(stream, line):
                return
        if rest:
            if len(rest) >= MAX_LINE_BYTES or (self.limit and len(rest) >= self.left):
                self._emit(stream, rest)  # over the allowance: what fits, then the notice
            else:
                self._partial[stream] = rest

    def close(self) -> None:
        """The container's output ended: a last line without its newline is logged as it is."""
        partial, self._partial = self._partial, {}
        for stream, rest in partial.items():
            self._emit(stream, rest)

    def _emit(self, stream: str, line: bytes) -> bool:
        """Log one line within the call's allowance; False once the allowance is spent."""
        if self.limit:
            if len(line) + 1 > self.left:
                if self.left > 0:
                    if self.left > 1:
                        self._log(stream, line[: self.left - 1])
                    log.debug("function output call_id=%s app_id=%s fn_id=%s: over FN_MAX_LOG_SIZE_BYTES (%d), "
                              "the rest of this call's output is dropped", self.call_id or "-", self.app_id,
                              self.fn_id, self.limit)
                self.left = 0
                self._partial.clear()
                return False
            self.left -= len(line) + 1
        self._log(stream, line)
        return True

    def _log(self, stream: str, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip("\r")
        # always one quoted value, as logrus quotes Fn's: a function's bytes must forge neither a log line (CR,
        # escape codes, all \u-escaped unless printable) nor a field a logfmt reader would take (call_id=...)
        log.debug("function output call_id=%s app_id=%s fn_id=%s stream=%s line=%s", self.call_id or "-",
                  self.app_id, self.fn_id, stream, json.dumps(text, ensure_ascii=not text.isprintable()))
