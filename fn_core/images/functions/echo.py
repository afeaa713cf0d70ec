"""Echo function: returns the request body. JSON bodies may ask for behaviour (tests use it).

JSON keys: ``sleep_ms`` (sleep before answering), ``fail`` (raise -> 502), ``exit`` (exit the
process with that code), ``allocate_mb`` (allocate memory), ``repeat`` + ``text`` (answer with
``text * repeat``), ``status`` + ``headers`` (response status and headers), ``env`` (answer with
the environment as JSON), ``log`` (write that line to stdout and to stderr first), ``fill`` +
``fill_kb`` (write that many KiB to the file ``fill`` names; answer with the bytes written and the error).
"""

import io
import json
import os
import sys
import time

from fdk import response


def handler(ctx, data: io.BytesIO | None = None):
    body = data.getvalue() if data is not None else b""
    try:
        req = json.loads(body) if body[:1] == b"{" else None
    except ValueError:
        req = None
    if not isinstance(req, dict):
        return response.Response(ctx, response_data=body, headers={"Content-Type": "application/octet-stream"})
    if req.get("log"):
        print(f"stdout: {req['log']}", flush=True)
        print(f"stderr: {req['log']}", file=sys.stderr, flush=True)
    if req.get("sleep_ms"):
        time.sleep(req["sleep_ms"] / 1000)
    if req.get("fail"):
        raise RuntimeError(str(req["fail"]))
    if "exit" in req:
        os._exit(int(req["exit"]))
    if req.get("allocate_mb"):
        hog = bytearray(int(req["allocate_mb"]) * 1024 * 1024)
        for i in range(0, len(hog), 4096):
            hog[i] = 1
    if req.get("fill"):
        payload = json.dumps(_fill(req["fill"], int(req.get("fill_kb", 1))))
    elif req.get("env"):
        payload = json.dumps(dict(os.environ), sort_keys=True)
    elif req.get("repeat"):
        payload = str(req.get("text", "x")) * int(req["repeat"])
    elif req.get("headers_echo"):
        payload = json.dumps({k: v for k, v in ctx.Headers().items()}, sort_keys=True)
    else:
        payload = body.decode()
    return response.Response(
        ctx,
        response_data=payload,
        headers=dict(req.get("headers", {}), **{"Content-Type": "application/json"}),
        status_code=int(req.get("status", 200)),
    )


def _fill(path: str, kib: int) -> dict:
    written, error, fd = 0, "", -1
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        for _ in range(kib):
            written += os.write(fd, b"x" * 1024)
    except OSError as exc:
        error = exc.strerror or str(exc)
    finally:
        if fd >= 0:
            os.close(fd)
    return {"written": written, "error": error}
