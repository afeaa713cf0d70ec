"""Echo function: returns the request body. JSON bodies may ask for behaviour (tests use it).

JSON keys: ``sleep_ms`` (sleep before answering), ``fail`` (raise -> 502), ``exit`` (exit the
process with that code), ``allocate_mb`` (allocate memory), ``repeat`` + ``text`` (answer with
``text * repeat``), ``status`` + ``headers`` (response status and headers), ``content_type`` (the answer's
Content-Type, default ``application/json``), ``env`` (answer with
the environment as JSON), ``log`` (write that line to stdout and to stderr first), ``fill`` +
``fill_kb`` (write that many KiB to the file ``fill`` names; answer with the bytes written and the error),
``ctx`` (answer with what the fdk's context shows of the request, as JSON: ``method`` (ctx.Method()),
``request_url`` (ctx.RequestURL()), ``call_id`` (ctx.CallID()), ``deadline`` (ctx.Deadline()), ``headers``
(ctx.Headers()), ``http_headers`` (ctx.HTTPHeaders()); the last two with lower-case names, as the fdk
keeps them, a repeated header's values as a list).

What the function sees of its container (tests of the container's hardening use them): ``limits``
(``/proc/self/limits`` as ``{"Max open files": [soft, hard], ...}``, a value an int or "unlimited"),
``whoami`` (from ``/proc/self/status``: ``uid`` and ``gid`` as [real, effective, saved, fs], ``groups``,
the capability sets ``cap_inh``, ``cap_prm``, ``cap_eff``, ``cap_bnd``, ``cap_amb`` as ints, and
``no_new_privs``), ``mounts`` (``/proc/self/mountinfo`` as ``{mount point: {"type": ..., "options":
[the mount's], "super": [its file system's]}}``), ``spawn`` (fork that many children that live until all
are forked; answer ``started``, the error that stopped it, and ``tasks``: the threads of every process in
the container at that peak; then reap them), ``files`` + ``dir`` (create that many empty files in ``dir``;
answer ``made`` and the error that stopped it; they are removed before answering, so the next call starts
clean).
"""

import io
import json
import os
import sys
import time
from typing import Any

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
    elif req.get("limits"):
        payload = json.dumps(_limits())
    elif req.get("whoami"):
        payload = json.dumps(_whoami())
    elif req.get("mounts"):
        payload = json.dumps(_mounts())
    elif req.get("spawn"):
        payload = json.dumps(_spawn(int(req["spawn"])))
    elif req.get("files"):
        payload = json.dumps(_files(str(req.get("dir", "/tmp")), int(req["files"])))
    elif req.get("env"):
        payload = json.dumps(dict(os.environ), sort_keys=True)
    elif req.get("repeat"):
        payload = str(req.get("text", "x")) * int(req["repeat"])
    elif req.get("ctx"):
        payload = json.dumps(
            {
                "method": ctx.Method(),
                "request_url": ctx.RequestURL(),
                "call_id": ctx.CallID(),
                "deadline": ctx.Deadline(),
                "headers": ctx.Headers(),
                "http_headers": ctx.HTTPHeaders(),
            },
            sort_keys=True,
        )
    elif req.get("headers_echo"):
        payload = json.dumps({k: v for k, v in ctx.Headers().items()}, sort_keys=True)
    else:
        payload = body.decode()
    return response.Response(
        ctx,
        response_data=payload,
        headers=dict(req.get("headers", {}), **{"Content-Type": req.get("content_type", "application/json")}),
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


def _limits() -> dict:
    limits: dict[str, list[int | str]] = {}
    with open("/proc/self/limits") as f:
        next(f)  # Limit  Soft Limit  Hard Limit  Units
        for line in f:  # the kernel's "%-25s %-20s %-20s %-10s"
            soft, hard = line[26:].split()[:2]
            limits[line[:26].strip()] = [v if v == "unlimited" else int(v) for v in (soft, hard)]
    return limits


def _whoami() -> dict:
    with open("/proc/self/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    who: dict[str, Any] = {key: [int(v) for v in status[key.capitalize()].split()] for key in ("uid", "gid", "groups")}
    for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        who[f"cap_{key[3:].lower()}"] = int(status[key], 16)
    who["no_new_privs"] = int(status["NoNewPrivs"])
    return who


def _mounts() -> dict:
    mounts = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields, _, rest = line.partition(" - ")
            point, options = fields.split()[4], fields.split()[5]
            fstype, _source, super_options = rest.split()
            mounts[point] = {"type": fstype, "options": options.split(","), "super": super_options.split(",")}
    return mounts


def _spawn(n: int) -> dict:
    started, error, children = 0, "", []
    r, w = os.pipe()
    try:
        for _ in range(n):
            pid = os.fork()
            if pid == 0:  # the child waits for the parent to close the pipe, then goes, whatever happens
                try:
                    os.close(w)
                    os.read(r, 1)
                finally:
                    os._exit(0)
            children.append(pid)
            started += 1
    except OSError as exc:
        error = exc.strerror or str(exc)
    tasks = 0
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            tasks += len(os.listdir(f"/proc/{entry}/task"))
        except OSError:
            pass  # gone meanwhile
    os.close(w)
    os.close(r)
    for pid in children:
        os.waitpid(pid, 0)
    return {"started": started, "error": error, "tasks": tasks}


def _files(directory: str, n: int) -> dict:
    made, error = [], ""
    try:
        for i in range(n):
            path = os.path.join(directory, f".echo-files-{os.getpid()}-{i}")
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            made.append(path)
    except OSError as exc:
        error = exc.strerror or str(exc)
    for path in made:
        os.unlink(path)
    return {"made": len(made), "error": error}
