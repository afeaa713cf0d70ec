"""Fuzz the v2 HTTP API (`/v2/apps`, `/v2/fns`, `/v2/triggers`) of an LB node started in this process on 127.0.0.1,
over a fresh sqlite store: bodies, paths, query strings and a few headers.

Contract:
- no 5xx, and no traceback logged (an exception no handler turned into an answer);
- every error is exactly `{"message": <str>}`;
- a refused request (4xx), and any GET, changes nothing in the store;
- an accepted object round-trips: GET answers what POST/PUT answered, the names, image, source and limits sent are
  the ones stored, config and annotations hold what was sent (an empty value deletes its key), and a listing filtered
  by its name finds it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import logging
import sqlite3
import sys
import tempfile
import urllib.parse

import aiohttp
import yarl
from common import Findings, OutOfBudget, begin, exception_signature, generate
from hypothesis import given
from hypothesis import strategies as st

from fn_core.config import load_config
from fn_core.lb.main import start_lb
from fn_core.plugins import get_plugin_manager

PATHS = {"app": "/v2/apps", "fn": "/v2/fns", "trigger": "/v2/triggers"}
FIELDS = {"app": ["name", "config", "annotations", "syslog_url", "shape", "id", "created_at", "updated_at"],
          "fn": ["name", "app_id", "image", "memory", "timeout", "idle_timeout", "config", "annotations", "shape", "id"],
          "trigger": ["name", "app_id", "fn_id", "type", "source", "annotations", "id"]}
ENDPOINT_ANNOTATIONS = {"fnproject.io/fn/invokeEndpoint", "fnproject.io/trigger/httpEndpoint"}  # the server sets these
# the sizes at the bounds, encodings, path tricks, lone surrogates
ODD = ["", " ", "a", "A" * 255, "A" * 256, "é" * 127, "é" * 128, "\x00", "a\nb", "%2F", "../x", "a/b", "/", "//", "/a b",
       "/a?b=c", "/a#b", "\u202e", "ǅ", "١٢٣", "a\u0301", "\ud800", "\udfff", "\ud83d\ude00", "😀", "\ufeff", "\U0010ffff",
       ".", "..", "http", "tcp://h:1", "0", "-1", "null", "/" + "x" * 5000]
SEGMENTS = ["", "x", "%00", "%ED%A0%80", "%FF", "%C0%AF", "%2F", "%2e%2e", "..", "a%20b", "%F0%9F%98%80", "A" * 300,
            "A" * 20000, "%25", "%", "%Z", ";", "a;b=c", "%0D%0A", "-1", "%C3%A9"]
HEADER_CASES = [{"Content-Type": "text/plain"}, {"Content-Type": "application/json; charset=utf-16"}, {"Content-Encoding": "gzip"},
                {"Expect": "100-continue"}, {"Expect": "foo"}, {"Host": "evil:1"}, {"Host": "x:99999999"}, {"Host": "x:abc"},
                {"Host": "x:1:2"}, {"Transfer-Encoding": "chunked"}, {"Fn-Invoke-Type": "detached"}]

texts = st.one_of(st.sampled_from(ODD), st.text(st.characters(blacklist_categories=("Cs",)), max_size=40),
                  st.text("aA1_-é/.%", max_size=300), st.tuples(st.sampled_from(ODD), st.text("aé_-/", max_size=5)).map("".join))
ints = st.one_of(st.sampled_from([0, 1, -1, 2**31, 2**63, 2**64, 10**30, 128, 8192, 8193, 300, 301, 3600, 3601]), st.integers())
scalars = st.one_of(st.none(), st.booleans(), ints, st.floats(), texts)
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)),
                           max_leaves=12)
maps = st.one_of(st.dictionaries(texts, texts, max_size=5), st.dictionaries(texts, json_values, max_size=5), json_values)
field_values = {"memory": st.one_of(ints, json_values), "timeout": st.one_of(ints, json_values),
                "idle_timeout": st.one_of(ints, json_values), "config": maps, "annotations": maps}
raw_bodies = st.one_of(st.binary(max_size=64), st.sampled_from([
    b"", b"{", b"[]", b"null", b"{}", b'{"name":"a","name":"b"}', b"\xef\xbb\xbf{}", b'{"a":NaN}', b'{"memory": 1e400}',
    b'{"name": "\\ud800"}', b'{"a":1}garbage', b"[" * 100000 + b"]" * 100000, b'{"a":' * 50000 + b"1" + b"}" * 50000]))


class LogWatch(logging.Handler):
    """Warnings and errors logged in this process: a traceback logged is a finding (an exception nothing handled)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        logging.getLogger().addHandler(self)
        logging.getLogger().setLevel(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self) -> list[logging.LogRecord]:
        records, self.records = self.records, []
        return records


class Api:
    """The node, a client session, and the store's file (read directly: what was really written)."""

    def __init__(self, found: Findings) -> None:
        self.found, self.logs, self.serial = found, LogWatch(), itertools.count()
        self.statuses: collections.Counter[str] = collections.Counter()

    async def start(self, tmp: str) -> None:
        self.db = f"{tmp}/fn.db"
        config = load_config(env={}, overrides={"db_url": f"sqlite3://{self.db}"})
        self.node = await start_lb(config, get_plugin_manager(config, load_entrypoints=False), host="127.0.0.1", port=0,
                                   runner_addresses=[])
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self.app = (await self.send("POST", "/v2/apps", body={"name": "base"}))[2]
        self.fn = (await self.send("POST", "/v2/fns", body={"name": "f", "app_id": self.app["id"], "image": "img:1"}))[2]
        self.logs.take()

    async def stop(self) -> None:
        await self.session.close()
        await self.node.stop()

    def store(self) -> dict:
        with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)) as db:
            return {t: dict(db.execute(f"SELECT id, doc FROM {t}").fetchall()) for t in ("apps", "fns", "triggers")}

    async def send(self, method, path, *, body=None, raw=None, headers=None, params=None):
        """(status, bytes, parsed JSON or None). ``path`` is sent as given (already percent-encoded)."""
        data = json.dumps(body).encode() if body is not None else raw
        url = yarl.URL(self.node.url + path, encoded=True)
        async with self.session.request(method, url, data=data, headers=headers, params=params, allow_redirects=False) as r:
            answer = await r.read()
        try:
            return r.status, answer, json.loads(answer)
        except ValueError:
            return r.status, answer, None

    def valid(self, kind: str) -> dict:
        n = next(self.serial)
        return {"app": {"name": f"app{n}", "config": {"K": "v"}, "annotations": {"k": "v"}},
                "fn": {"name": f"fn{n}", "app_id": self.app["id"], "image": "img:1", "memory": 256, "timeout": 10},
                "trigger": {"name": f"t{n}", "app_id": self.app["id"], "fn_id": self.fn["id"], "type": "http",
                            "source": f"/s{n}"}}[kind]

    async def case(self, method, path, case, **request) -> tuple[int, object]:
        """One request against the contract common to all: status, error shape, logs, store unchanged when refused."""
        before = self.store()
        try:
            status, answer, parsed = await self.send(method, path, **request)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.found.add(f"{method} {path.split('?')[0][:12]}: no answer ({type(exc).__name__})", case)
            return 0, None
        parts = path.split("?")[0].split("/")
        what = f"{method} {'/'.join(parts[:3] if parts[1:2] == ['v2'] else parts[:2])}"  # one signature per resource
        self.statuses[f"{status // 100}xx"] += 1
        if status >= 500:
            self.found.add(f"{what}: status {status}", case, answer[:300].decode(errors="replace"))
        elif status >= 400 and method != "HEAD" and not (isinstance(parsed, dict) and set(parsed) == {"message"}
                                                           and isinstance(parsed["message"], str)):
            self.found.add(f"{what}: error {status} is not {{'message': str}}", case, repr(answer[:200]))
        for record in self.logs.take():
            if record.exc_info and record.exc_info[1] is not None:
                self.found.add(f"{what}: logged {exception_signature(record.exc_info[1])}", case, self.logs.format(record)[-1500:])
            elif record.levelno >= logging.ERROR:
                self.found.add(f"{what}: logged {record.getMessage()[:80]!r}", case)
        if (status >= 400 or method in ("GET", "HEAD")) and self.store() != before:
            self.found.add(f"{what}: store changed by a {status}", case)
        return status, parsed

    async def body_case(self, kind: str, method: str, body, raw: bytes | None = None) -> None:
        path = PATHS[kind]
        if method == "PUT":  # a fresh object to change
            path = f"{path}/{(await self.send('POST', path, body=self.valid(kind)))[2]['id']}"
        request = {"raw": raw, "headers": {"Content-Type": "application/json"}} if raw is not None else {"body": body}
        status, answer = await self.case(method, path, {"method": method, "path": path, "body": body if raw is None else raw},
                                         **request)
        if status == 200 and isinstance(body, dict):
            await self.round_trip(kind, method, json.loads(json.dumps(body)), answer)  # surrogate pairs joined, as decoded
        if method == "PUT" or (status == 200 and isinstance(answer, dict) and "id" in answer):
            await self.send("DELETE", f"{PATHS[kind]}/{answer['id'] if method == 'POST' else path.rsplit('/', 1)[1]}")

    async def round_trip(self, kind: str, method: str, sent: dict, answer) -> None:
        case = {"method": method, "kind": kind, "body": sent}
        if not isinstance(answer, dict) or "id" not in answer:
            self.found.add(f"{method} {kind}: 200 without an id", case, repr(answer)[:200])
            return
        status, _, got = await self.send("GET", f"{PATHS[kind]}/{answer['id']}")
        if got != answer:
            self.found.add(f"{method} {kind}: GET differs from the answer", case, f"{answer!r:.500}\n{got!r:.500}")
        for key in ("name", "image", "source", "syslog_url", "memory", "timeout", "idle_timeout"):
            value = sent.get(key)
            if value and type(value) in (str, int) and answer.get(key) != value:
                self.found.add(f"{method} {kind}: {key} sent is not {key} stored", case, f"{answer.get(key)!r:.100}")
        for key in ("config", "annotations"):
            stored = answer.get(key) or {}
            for k, v in (sent.get(key) or {}).items() if isinstance(sent.get(key), dict) else ():
                if k not in ENDPOINT_ANNOTATIONS and (k in stored if v in ("", None) else stored.get(k) != v):
                    self.found.add(f"{method} {kind}: {key} stored is not {key} sent", case, f"{k!r:.40}: {stored.get(k)!r:.100}")
        params = {"name": answer["name"]} if kind == "app" else {"app_id": answer["app_id"], "name": answer["name"]}
        status, _, page = await self.send("GET", PATHS[kind], params=params)
        if status != 200 or not any(item.get("id") == answer["id"] for item in page.get("items", [])):
            self.found.add(f"{method} {kind}: not listed under its name", case, f"status {status}")


def main() -> int:
    args, budget, found = begin("api", __doc__, cases=15000, seconds=90)
    api = Api(found)
    loop = asyncio.new_event_loop()
    tmp = tempfile.TemporaryDirectory(prefix="fuzz-api-")
    loop.run_until_complete(api.start(tmp.name))

    def run(coro) -> None:
        try:
            budget.take()
        except OutOfBudget:
            coro.close()
            raise
        loop.run_until_complete(coro)

    kinds, methods = st.sampled_from(list(PATHS)), st.sampled_from(["POST", "PUT"])

    @given(kinds, methods, st.data())
    def changed_fields(kind, method, data):  # a valid body (or none, for PUT) with one to three fields changed
        body = api.valid(kind) if method == "POST" else {}
        for field in data.draw(st.lists(st.sampled_from(FIELDS[kind]), min_size=1, max_size=3)):
            body[field] = data.draw(field_values.get(field, st.one_of(texts, json_values)))
        run(api.body_case(kind, method, body))

    @given(kinds, methods, json_values)
    def any_json(kind, method, body):
        run(api.body_case(kind, method, body))

    @given(kinds, methods, raw_bodies)
    def any_bytes(kind, method, raw):
        run(api.body_case(kind, method, None, raw))

    @given(st.sampled_from(["/v2/apps/{}", "/v2/fns/{}", "/v2/triggers/{}", "/v2/apps/{}/{}", "/v2/{}", "/invoke/{}", "/t/{}/{}",
                            "/v2/runner/apps/{}/triggerBySource/http/{}", "/v2/fns/{}/calls/{}", "/{}"]),
           st.lists(st.one_of(st.sampled_from(SEGMENTS), st.text(max_size=20).map(lambda s: urllib.parse.quote(s, safe=""))),
                    min_size=2, max_size=2),
           st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "FOO"]))
    def paths(template, segments, method):  # only unknown ids: the base app and fn stay, and no call goes to a runner
        run(api.case(method, template.format(*segments), {"method": method, "path": template.format(*segments)}))

    @given(st.sampled_from(list(PATHS.values())), st.lists(st.tuples(
        st.sampled_from(["name", "app_id", "fn_id", "per_page", "cursor", "image", "x", ""]),
        st.one_of(st.sampled_from(SEGMENTS + ["0", "100", "101", "9" * 30, " 5", "AA==", "QUJD", "YQ", "7aCA"]),
                  st.text(max_size=20).map(lambda s: urllib.parse.quote(s, safe="")))), max_size=4), st.booleans())
    def queries(path, pairs, with_app):
        pairs += [("app_id", api.app["id"])] if with_app else []
        query = "&".join(f"{k}={v}" for k, v in pairs)
        run(api.case("GET", f"{path}?{query}", {"path": f"{path}?{query}"}))

    for headers in HEADER_CASES:  # the headers that once made the API answer 500 (Expect, a Host yarl refuses)
        for method, path in (("POST", "/v2/apps"), ("PUT", f"/v2/apps/{api.app['id']}"), ("POST", "/invoke/NOPE")):
            budget.done += 1
            loop.run_until_complete(api.case(method, path, {"method": method, "path": path, "headers": headers},
                                             raw=b'{"config": {"H": "1"}}', headers=headers))
    tests = ((changed_fields, 0.5), (any_json, 0.1), (any_bytes, 0.1), (paths, 0.15), (queries, 0.15))
    for test, share in tests:
        generate(test, budget.share(share), args.seed)
    loop.run_until_complete(api.stop())
    loop.close()
    tmp.cleanup()
    return found.report(f"answers {dict(sorted(api.statuses.items()))}")


if __name__ == "__main__":
    sys.exit(main())
