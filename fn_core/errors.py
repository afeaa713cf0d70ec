"""Errors with an HTTP status, as Fn reports them (`{"message": ...}` bodies).

`APIError` is the one error type of the platform: API handlers turn it into Fn's JSON error
response, the runner turns it into `CallFinished{errorCode, errorStr, errorUser}` and the LB
turns that back into an `APIError`. Plugins raise it (or a subclass) to reject a call.

The subclasses carry Fn's status codes and messages (api/models/error.go), so that
`except ServerTooBusy` reads as what it means.
"""

from __future__ import annotations


def describe(exc: BaseException) -> str:
    """``Type: message`` for a log line, or the type alone for an exception without a message (not ``OSError: ``)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class FnCoreError(Exception):
    """Base of every error fn-core raises on purpose."""


class ConfigError(FnCoreError):
    """Bad configuration: stops startup with a message that says what to fix."""


class PluginError(FnCoreError):
    """A plugin broke a contract (bad hookimpl, duplicate name, ...). The message names it."""


class APIError(FnCoreError):
    """An error with an HTTP status code and a message for the client.

    :param status: HTTP status code sent to the client (e.g. 400, 502, 503).
    :param message: text sent as ``{"message": ...}``; subclasses supply Fn's default.
    :param user_error: True when the function (user code), not the platform, is at fault.
    :param headers: extra response headers (e.g. ``Retry-After`` on 503).
    """

    status: int = 500
    message: str = "internal server error"
    user_error: bool = False
    retry_after_s: int | None = None  # a class that may be retried sets it: sent as Retry-After

    def __init__(
        self,
        message: str | None = None,
        *,
        status: int | None = None,
        user_error: bool | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if message is not None:
            self.message = message
        if status is not None:
            self.status = status
        if user_error is not None:
            self.user_error = user_error
        self.headers = dict(headers or {})
        if self.retry_after_s is not None:
            self.headers.setdefault("Retry-After", str(self.retry_after_s))
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, message={self.message!r})"


class BadRequest(APIError):
    status = 400
    message = "bad request"


class InvalidImage(BadRequest):
    message = "Invalid image"


class ImageWithVolume(BadRequest):
    """The image declares a VOLUME: state that would outlive calls (allowed with FN_IMAGE_ENABLE_VOLUME)."""

    message = "Image has Volume definition"
    user_error = True


class NotFound(APIError):
    status = 404
    message = "not found"


class Conflict(APIError):
    status = 409
    message = "conflict"


class RequestTooLarge(APIError):
    status = 413
    message = "Content-Length too large for this server"


class RequestBodyTimeout(APIError):
    """The client did not send the whole body within FN_REQUEST_BODY_READ_TIMEOUT; the connection is closed."""

    status = 408
    message = "Timed out reading the request body"


class RequestHeadTimeout(APIError):
    """The client did not send a whole request head within FN_REQUEST_HEADER_READ_TIMEOUT; the connection is closed."""

    status = 408
    message = "Timed out reading the request head"


class RequestHeadTooLarge(APIError):
    """The request head (request line and headers) is over FN_MAX_REQUEST_HEADER_SIZE; the connection is closed."""

    status = 431
    message = "Request Header Fields Too Large"


class CallResourceTooBig(APIError):
    status = 400
    message = "Requested CPU/Memory cannot be allocated"


class ServerTooBusy(APIError):
    """The NACK: the runner could not take the call and nothing was committed."""

    status = 503
    message = "Timed out - server too busy"
    retry_after_s = 15


class RunnerCannotLaunch(ServerTooBusy):
    """This runner cannot start a container now for a want of its own, not the call's: another runner may. A NACK, as
    a runner at capacity gives: nothing ran, and the LB tries the next runner, or again after
    FN_RETRY_ALL_DELAY_MSECS when every runner refused, until the placer timeout. ``reason`` is the label the
    runner counts such refusals under (``fn_runner_container_launches_refused_total``)."""

    reason = "cannot_launch"
    message = "the runner cannot start containers now"


class ContainerEngineUnavailable(RunnerCannotLaunch):
    """The runner's container engine does not answer (stopped, restarting, hung)."""

    reason = "engine_unavailable"
    message = "the runner's container engine does not answer"


class RunnerOutOfResources(RunnerCannotLaunch):
    """The runner's disk (where it makes the containers' socket directories) or its container engine's is full (space,
    inodes, quota), or the runner is out of file descriptors (or memory, socket buffers): a want of this host's, which another
    runner's may not share. The message says which (for the runner's log: the client is never sent it)."""

    reason = "out_of_resources"
    message = "the runner is out of disk space or file descriptors"


class ServiceUnavailable(APIError):
    """The platform cannot serve the call now (e.g. the API node is unreachable); the client may retry."""

    status = 503
    message = "Service temporarily unavailable"
    retry_after_s = 5


class CallTimeout(APIError):
    status = 504
    message = "Timed out"
    user_error = True


class ContainerInitTimeout(APIError):
    status = 504
    message = "Container initialization timed out, please ensure you are using the latest fdk and check the logs"
    user_error = True


class DockerPullTimeout(APIError):
    status = 504
    message = "Image pull timed out"
    user_error = True


class ContainerInitFail(APIError):
    status = 502
    message = "container failed to initialize, please ensure you are using the latest fdk and check the logs"
    user_error = True


class FunctionFailed(APIError):
    status = 502
    message = "function failed"
    user_error = True


class FunctionInvalidResponse(APIError):
    status = 502
    message = "invalid function response"
    user_error = True


class FunctionResponseError(APIError):
    """Fn's ErrFunctionResponse: the container's answer could not be read (and it had not exited)."""

    status = 502
    message = "error receiving function response"
    user_error = True


class FunctionResponseTooBig(APIError):
    status = 502
    message = "function response body too large"
    user_error = True


class FunctionResponseHeaderTooBig(APIError):
    status = 502
    message = "function response header too large"
    user_error = True


class SyslogUnavailable(APIError):
    """The app's syslog_url could not be reached when the container started (Docker's syslog driver)."""

    status = 500
    message = "Syslog Unavailable"
    user_error = True


class ContainerExited(APIError):
    """The container died during the call; the message says how (exit code N / out of memory)."""

    status = 502
    message = "container exit code 1"
    user_error = True


class CutAtShutdown(APIError):
    """A runner's stop ended its grace with the call still running. Not 503: that would be the NACK, and the call
    (committed) would run again elsewhere."""

    status = 500
    message = "call cut short: the runner is shutting down"


class ServiceReservationFailure(APIError):
    status = 500
    message = "Unable to service the request"


class ClientCancelled(APIError):
    status = 444
    message = "Client cancelled context"
