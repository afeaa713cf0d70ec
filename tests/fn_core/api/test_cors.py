"""CORS (FN_API_CORS_ORIGINS, FN_API_CORS_HEADERS), as a browser sees it: on every route, as Fn's is on its router.

A real LB on 127.0.0.1 with no runners (CRUD, and invoke paths refused before a call); and a whole platform with
real Docker for a web page calling a function.
"""

from __future__ import annotations

import pytest

from fn_core.config import load_config
from fn_core.errors import ConfigError

UI = "https://ui.example.com"
OTHER = "https://evil.example.net"
MAX = 1000
CORS_HEADERS = (
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Headers",
    "Access-Control-Max-Age",
    "Access-Control-Expose-Headers",
)


async def send(session, method, path, **kwargs):
    async with session.request(method, path, **kwargs) as r:
        return r.status, r.headers, await r.read()


def preflight(origin: str, method: str = "POST", headers: str = "Content-Type") -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers}


def no_cors(headers) -> bool:
    return not [name for name in CORS_HEADERS if name in headers] and "Origin" not in headers.getall("Vary", [])


async def test_preflight_from_an_allowed_origin_is_answered_204(start):
    api = await start({"FN_API_CORS_ORIGINS": f"https://other.example, {UI}", "FN_API_CORS_HEADERS": "Authorization,X-Trace"})
    for path in ("/v2/apps", "/v2/fns/01SOMEID"):
        status, headers, body = await send(api, "OPTIONS", path, headers=preflight(UI, "PUT", "content-type,authorization"))
        assert (status, body) == (204, b"")
        assert headers["Access-Control-Allow-Origin"] == UI
        assert "Origin" in headers.getall("Vary")
        assert {m.strip() for m in headers["Access-Control-Allow-Methods"].split(",")} >= {"GET", "POST", "PUT", "DELETE"}
        allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
        assert allowed == {"origin", "content-length", "content-type", "authorization", "x-trace"}
        assert headers["Access-Control-Max-Age"] == "43200"


async def test_answers_to_an_allowed_origin_carry_cors_headers_errors_included(start):
    api = await start({"FN_API_CORS_ORIGINS": UI}, max_request_size=MAX)
    origin = {"Origin": UI}

    status, headers, _ = await send(api, "POST", "/v2/apps", json={"name": "a"}, headers=origin)
    assert status == 200 and headers["Access-Control-Allow-Origin"] == UI and headers.getall("Vary") == ["Origin"]
    status, headers, _ = await send(api, "GET", "/v2/apps", headers=origin)
    assert status == 200 and headers["Access-Control-Allow-Origin"] == UI
    assert "Access-Control-Allow-Methods" not in headers  # a preflight answer only

    errors = [
        ("GET", "/v2/apps/01NOPE", {}, 404, {"message": "App not found"}),
        ("POST", "/v2/apps", {"data": b"{not json"}, 400, {"message": "Invalid JSON"}),
        ("POST", "/v2/apps", {"json": {"name": "a"}}, 409, {"message": "App already exists"}),
        ("PATCH", "/v2/apps", {}, 405, {"message": "Method not allowed"}),
        ("GET", "/v2/nowhere", {}, 404, {"message": "Path not found"}),
        ("POST", "/v2/apps", {"data": b"x" * (MAX + 1)}, 413, None),  # refused from Content-Length, before routing
    ]
    for method, path, kwargs, want_status, want_body in errors:
        async with api.request(method, path, headers=origin, **kwargs) as r:
            assert r.status == want_status, (method, path)
            if want_body is not None:
                assert await r.json() == want_body  # Fn's error JSON, unchanged
            assert r.headers["Access-Control-Allow-Origin"] == UI, (method, path)


async def test_an_origin_not_allowed_gets_no_cors_headers_and_is_not_failed(start):
    api = await start({"FN_API_CORS_ORIGINS": UI})
    status, headers, _ = await send(api, "POST", "/v2/apps", json={"name": "a"}, headers={"Origin": OTHER})
    assert status == 200 and no_cors(headers)  # served; the browser withholds the answer from the page
    status, headers, _ = await send(api, "GET", "/v2/apps/01NOPE", headers={"Origin": OTHER})
    assert status == 404 and no_cors(headers)
    status, headers, _ = await send(api, "OPTIONS", "/v2/apps", headers=preflight(OTHER))
    assert status == 405 and no_cors(headers)  # as without CORS: no permission given
    status, headers, _ = await send(api, "GET", "/v2/apps")  # no Origin: not a cross-origin browser request
    assert status == 200 and no_cors(headers)


async def test_any_origin(start):
    api = await start({"FN_API_CORS_ORIGINS": "*"})
    status, headers, _ = await send(api, "OPTIONS", "/v2/apps", headers=preflight(OTHER))
    assert status == 204 and headers["Access-Control-Allow-Origin"] == "*" and "Vary" not in headers
    status, headers, _ = await send(api, "GET", "/v2/apps/01NOPE", headers={"Origin": OTHER})
    assert status == 404 and headers["Access-Control-Allow-Origin"] == "*" and "Vary" not in headers


async def test_off_by_default(start):
    api = await start({})
    status, headers, _ = await send(api, "OPTIONS", "/v2/apps", headers=preflight(UI))
    assert status == 405 and no_cors(headers)
    status, headers, _ = await send(api, "GET", "/v2/apps", headers={"Origin": UI})
    assert status == 200 and no_cors(headers)


async def test_invoke_triggers_and_the_admin_routes_get_cors_too(start):
    api = await start({"FN_API_CORS_ORIGINS": UI})
    for method, path, want in [
        ("POST", "/invoke/01NOPE", 404),
        ("GET", "/t/noapp/x", 404),
        ("GET", "/version", 200),
        ("GET", "/v2x", 404),
    ]:
        status, headers, _ = await send(api, method, path, headers={"Origin": UI})
        assert status == want and headers["Access-Control-Allow-Origin"] == UI, path
        status, headers, _ = await send(api, "OPTIONS", path, headers=preflight(UI))
        assert status == 204 and headers["Access-Control-Allow-Origin"] == UI, path
        status, headers, _ = await send(api, method, path, headers={"Origin": OTHER})
        assert status == want and no_cors(headers), path


async def test_a_preflight_is_answered_before_check_request_which_sees_the_request_that_follows(start):
    """A browser sends no credentials with a preflight: an auth plugin must not refuse it, on any route."""
    from fn_core import APIError, hookimpl

    seen = []

    class Auth:
        @hookimpl
        def check_request(self, request):
            seen.append((request.method, request.path))
            raise APIError("no token", status=401)

    api = await start({"FN_API_CORS_ORIGINS": UI}, plugins=[("auth", Auth())])
    for path in ("/v2/apps", "/invoke/01SOMEFN", "/t/app/hook"):
        assert (await send(api, "OPTIONS", path, headers=preflight(UI)))[0] == 204, path
        status, headers, _ = await send(api, "POST", path, headers={"Origin": UI})
        assert status == 401 and headers["Access-Control-Allow-Origin"] == UI, path  # the page may read the refusal
    assert seen == [("POST", "/v2/apps"), ("POST", "/invoke/01SOMEFN"), ("POST", "/t/app/hook")]


async def test_a_web_page_calls_a_function_across_origins(fn_platform, echo_image):
    """Real LB, runner and Docker: a page's preflight, then its call, whose answer the browser may read; a big
    answer (streamed by the LB as it comes from the runner) carries the header as a small one does."""
    platform = await fn_platform(env={"FN_API_CORS_ORIGINS": UI, "FN_RID_HEADER": "X-Request-Id"})
    fn = await platform.deploy(echo_image, name="page")
    await platform.api("POST", "/v2/triggers", {"name": "hello", "app_id": fn["app_id"], "fn_id": fn["id"],
                                                "type": "http", "source": "/hello"})
    session = platform.session
    for path in (f"{platform.url}/invoke/{fn['id']}", f"{platform.url}/t/app/hello"):
        status, headers, _ = await send(session, "OPTIONS", path, headers=preflight(UI, "POST", "content-type"))
        assert status == 204 and headers["Access-Control-Allow-Origin"] == UI, path
        for body in (b"hi", b"x" * (256 * 1024)):
            status, headers, answer = await send(session, "POST", path, data=body, headers={"Origin": UI})
            assert (status, answer) == (200, body), path
            assert headers["Access-Control-Allow-Origin"] == UI and headers.getall("Vary") == ["Origin"], path
            assert headers["Access-Control-Expose-Headers"] == "X-Request-Id" and headers["X-Request-Id"], path


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FN_API_CORS_ORIGINS": "https://ui.example.com/"}, "api_cors_origins (from $FN_API_CORS_ORIGINS): 'https://ui.example.com/' is not an origin"),
        ({"FN_API_CORS_ORIGINS": "ui.example.com"}, "api_cors_origins (from $FN_API_CORS_ORIGINS): 'ui.example.com' is not an origin"),
        ({"FN_API_CORS_ORIGINS": "*,https://ui.example.com"}, "api_cors_origins (from $FN_API_CORS_ORIGINS): * (any origin) must be the only entry"),
        ({"FN_API_CORS_HEADERS": "X-Ok,X Bad"}, "api_cors_headers (from $FN_API_CORS_HEADERS): 'X Bad' is not an HTTP header name"),
    ],
)
def test_bad_cors_settings_are_clear_errors(env, message):
    with pytest.raises(ConfigError) as err:
        load_config(env=env)
    assert message in str(err.value)


def test_cors_settings_from_env_and_file(tmp_path):
    config = load_config(env={"FN_API_CORS_ORIGINS": f" {UI} , http://localhost:3000 ", "FN_API_CORS_HEADERS": "X-A, X-B"})
    assert config.api_cors_origins == [UI, "http://localhost:3000"] and config.api_cors_headers == ["X-A", "X-B"]
    path = tmp_path / "fn.toml"
    path.write_text('api_cors_origins = ["*"]\n')
    assert load_config(path, env={}).api_cors_origins == ["*"]
