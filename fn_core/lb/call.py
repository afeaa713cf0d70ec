"""Building the call model from an fn and an HTTP request: Fn's ``FromHTTPFnRequest``.

Also the trigger header mapping both ways (Fn's ``ServeHTTPTrigger`` / ``triggerResponseWriter``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from fn_core.models import CALL_TYPE_DETACHED, CALL_TYPE_SYNC, App, Call, Fn, Trigger, now_rfc3339
from fn_core.store.base import new_id

HTTP_HEADER_PREFIX = "Fn-Http-H-"
INTENT_HTTP = "httprequest"
# Never forwarded to the client from a runner's result_start: the HTTP server sets its own.
HOP_BY_HOP = frozenset(
    h.lower()
    for h in ("Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer",
              "Transfer-Encoding", "Upgrade", "Content-Length", "Proxy-Connection")
)


@functools.lru_cache(maxsize=4096)  # clients send the same few names on every call
def canonical_header(name: str) -> str:
    """Go's CanonicalMIMEHeaderKey: "content-type" -> "Content-Type", as Fn's call JSON has it."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def collect_headers(items: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for key, value in items:
        headers.setdefault(canonical_header(key), []).append(value)
    return headers


def trigger_headers(items: Iterable[tuple[str, str]], method: str, url: str) -> dict[str, list[str]]:
    """Every request header X becomes Fn-Http-H-X (Content-Type stays), plus method, URL and intent."""
    headers: dict[str, list[str]] = {}
    for key, value in items:
        name = canonical_header(key)
        if name != "Content-Type":
            name = HTTP_HEADER_PREFIX + name
        headers.setdefault(name, []).append(value)
    headers["Fn-Http-Method"] = [method]
    headers["Fn-Http-Request-Url"] = [url]
    headers["Fn-Intent"] = [INTENT_HTTP]
    return headers


def build_call(
    app: App,
    fn: Fn,
    *,
    method: str,
    url: str,
    headers: dict[str, list[str]],
    detached: bool = False,
    trigger: Trigger | None = None,
) -> Call:
    config = {**app.config, **fn.config}
    config.update(FN_APP_ID=app.id, FN_FN_ID=fn.id, FN_MEMORY=str(fn.memory), FN_TYPE=CALL_TYPE_SYNC)
    return Call(
        id=new_id(),
        app_id=app.id,
        app_name=app.name,
        fn_id=fn.id,
        trigger_id=trigger.id if trigger else "",
        image=fn.image,
        type=CALL_TYPE_DETACHED if detached else CALL_TYPE_SYNC,
        memory=fn.memory,
        timeout=fn.timeout,
        idle_timeout=fn.idle_timeout,
        config=config,
        annotations={**app.annotations, **fn.annotations},
        headers=headers,
        method=method,
        url=url,
        syslog_url=app.syslog_url,
        created_at=now_rfc3339(),
    )


def response_headers(runner_headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """/invoke: the function's headers as the runner sent them, less hop-by-hop ones."""
    return [(k, v) for k, v in runner_headers if k.lower() not in HOP_BY_HOP]


def trigger_response(status: int, runner_headers: Iterable[tuple[str, str]]) -> tuple[int, list[tuple[str, str]]]:
    """Triggers: keep Content-Type and Fn-Http-H-* (prefix stripped); Fn-Http-Status gives the status."""
    out: list[tuple[str, str]] = []
    user_status = 0
    prefix = HTTP_HEADER_PREFIX.lower()
    for key, value in runner_headers:
        lower = key.lower()
        if lower == "content-type":
            out.append(("Content-Type", value))
        elif lower.startswith(prefix) and len(key) > len(prefix):
            if key[len(prefix):].lower() not in HOP_BY_HOP:
                out.append((key[len(prefix):], value))
        elif lower == "fn-http-status" and value.strip().isdigit():
            user_status = int(value)
    if status >= 400:
        return status, out
    return (user_status if 100 <= user_status <= 999 else 200), out


