"""The OpenAPI description is true to the app's routes, valid OpenAPI 3.1, and served (with
its docs page) to anyone, keys or not, through the same middlewares as every route."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from aiohttp import web
from openapi_spec_validator import OpenAPIV30SpecValidator, OpenAPIV31SpecValidator

from server.api_description import openapi_document
from server.app import build_app
from server.auth import ApiKeys, fingerprint
from server.config import ServerConfig
from server.errors import Errors
from tests.server_process import ServerProcess

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
KEY = "openapi-key-0123456789"
DOCS_SCRIPT = Path(__file__).resolve().parents[1] / "server" / "docs_page" / "rollscribe-docs.js"


def _openapi_path(aiohttp_path: str) -> str:
    """aiohttp's `{name}` or `{name:regex}` as OpenAPI's `{name}`."""
    return re.sub(r"\{([^}:]+)(:[^}]*)?\}", r"{\1}", aiohttp_path)


def app_routes(app: web.Application) -> set[tuple[str, str]]:
    """(METHOD, path) of every route the router holds, but the HEAD that web.get() adds
    beside each GET (allow_head=True registers a HEAD route with the GET's own handler on
    the same resource); a HEAD with a handler of its own, as tus's, is kept."""
    routes = list(app.router.routes())
    get_handlers = {(id(r.resource), r.handler) for r in routes if r.method == "GET" and r.resource}
    found = set()
    for route in routes:
        assert route.resource is not None
        if route.method == "HEAD" and (id(route.resource), route.handler) in get_handlers:
            continue
        found.add((route.method, _openapi_path(route.resource.canonical)))
    return found


def described_routes(document: dict) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def test_every_route_is_described_and_nothing_else(tmp_path: Path) -> None:
    app = build_app(ServerConfig(data_dir=tmp_path / "data", workers=0))
    routes = app_routes(app)
    described = described_routes(openapi_document())
    assert routes - described == set(), "routes missing from server/api_description/"
    assert described - routes == set(), "described operations the app does not route"
    # The comparison is not vacuous: it sees tus's own HEAD, and skips web.get's.
    assert ("HEAD", "/files/{upload_id}") in routes
    assert ("HEAD", "/meetings/{meeting_id}") not in routes


@pytest.mark.parametrize("keys_enabled", [True, False])
def test_description_is_valid_openapi_3_1(keys_enabled: bool) -> None:
    document = openapi_document(keys_enabled)
    assert document["openapi"].startswith("3.1.")
    errors = [str(e.message) for e in OpenAPIV31SpecValidator(document).iter_errors()]
    assert errors == []
    no_401 = all(
        "401" not in op["responses"]
        for item in document["paths"].values()
        for method, op in item.items()
        if method in HTTP_METHODS
    )
    assert no_401 != keys_enabled


def test_every_operation_documents_its_errors_with_the_shared_body() -> None:
    document = openapi_document()
    error_ref = "#/components/schemas/Error"
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method not in HTTP_METHODS:
                continue
            assert "500" in op["responses"], (method, path)
            for status, response in op["responses"].items():
                if int(status) >= 400 and (path, status) != ("/readyz", "503"):  # a report
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": error_ref}, (method, path, status)
            secured = op.get("security", document["security"]) == document["security"]
            assert ("401" in op["responses"]) == secured, (method, path)
            if secured:
                assert "WWW-Authenticate" in op["responses"]["401"]["headers"]
    codes = document["components"]["schemas"]["Error"]["properties"]["error"]["properties"]
    assert Errors.UNAUTHORIZED.code in codes["code"]["description"]


def test_open_paths_match_the_routes_the_description_leaves_open() -> None:
    """A route the description says needs no key is open in server/auth.py, and back."""
    from server.auth import OPEN_PATHS, OPEN_PREFIXES

    document = openapi_document()
    described_open = {
        path
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in HTTP_METHODS and method != "options" and "security" in op
    }
    assert OPEN_PATHS <= described_open
    templated = described_open - OPEN_PATHS
    # each open prefix is one described route: the prefix and then one path parameter
    assert sorted(p.rsplit("{", 1)[0] for p in templated) == sorted(OPEN_PREFIXES)
    assert all(p.endswith("}") and p.count("{") == 1 for p in templated)


# ---- served ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_docs_server(tmp_path_factory: pytest.TempPathFactory):
    server = ServerProcess(
        tmp_path_factory.mktemp("docs-keyed") / "data", env={"ROLLSCRIBE_API_KEYS": KEY}
    ).start()
    yield server
    server.stop()


def test_openapi_json_is_served_as_json(protocol_server: ServerProcess) -> None:
    r = requests.get(protocol_server.url + "/openapi.json", timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"].split(";")[0] == "application/json"
    # The protocol server has no keys: its description asks for none.
    assert r.json() == json.loads(json.dumps(openapi_document(keys_enabled=False)))
    assert r.json()["security"] == []


def test_docs_page_and_its_assets_are_served_from_the_package(
    protocol_server: ServerProcess,
) -> None:
    page = requests.get(protocol_server.url + "/docs", timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "http" not in page.text.lower().replace("http-equiv", "")  # no CDN, no absolute URL
    assets = re.findall(r'(?:src|href)="(docs/[^"]+)"', page.text)
    assert "docs/swagger-ui-bundle.js" in assets
    expected = {".js": "application/javascript", ".css": "text/css", ".png": "image/png"}
    for asset in assets:
        r = requests.get(f"{protocol_server.url}/{asset}", timeout=10)
        assert r.status_code == 200, asset
        assert r.headers["Content-Type"].split(";")[0] == expected[Path(asset).suffix], asset
        assert len(r.content) > 0


@pytest.mark.parametrize(
    "asset", ["nope.js", "index.html", "swagger-ui-bundle.js.map", "..%2Fapp.py", "%2e%2e"]
)
def test_unknown_docs_assets_are_404_json(protocol_server: ServerProcess, asset: str) -> None:
    r = requests.get(f"{protocol_server.url}/docs/{asset}", timeout=10)
    assert r.status_code == 404
    assert r.headers["Content-Type"].split(";")[0] == "application/json"
    assert r.json()["error"]["code"] == Errors.ROUTE_NOT_FOUND.code


def test_docs_pass_the_host_check(protocol_server: ServerProcess) -> None:
    for path in ("/openapi.json", "/docs", "/docs/swagger-ui.css"):
        r = requests.get(protocol_server.url + path, headers={"Host": "evil.example"}, timeout=10)
        assert r.status_code == 403, path
        assert r.json()["error"]["code"] == Errors.HOST_NOT_ALLOWED.code


def test_docs_pass_the_cors_middleware(protocol_server: ServerProcess) -> None:
    origin = "http://app.example"  # the protocol server's --cors-origins
    r = requests.get(protocol_server.url + "/openapi.json", headers={"Origin": origin}, timeout=10)
    assert r.headers["Access-Control-Allow-Origin"] == origin
    r = requests.get(
        protocol_server.url + "/openapi.json", headers={"Origin": "http://evil.example"}, timeout=10
    )
    assert "Access-Control-Allow-Origin" not in r.headers


def test_docs_need_no_key_where_other_routes_do(keyed_docs_server: ServerProcess) -> None:
    base = keyed_docs_server.url
    for path in ("/openapi.json", "/docs", "/docs/swagger-ui.css", "/docs/rollscribe-docs.js"):
        assert requests.get(base + path, timeout=10).status_code == 200, path
    assert requests.get(base + "/docs/nope.css", timeout=10).status_code == 404
    served = requests.get(base + "/openapi.json", timeout=10).json()
    assert served == json.loads(json.dumps(openapi_document(keys_enabled=True)))
    assert served["security"] == [{"bearerAuth": []}]
    r = requests.get(base + "/webhooks", timeout=10)
    assert r.status_code == 401
    assert requests.get(
        base + "/webhooks", headers={"Authorization": f"Bearer {KEY}"}, timeout=10
    ).ok


def test_keys_still_build_the_same_routes(tmp_path: Path) -> None:
    """With keys the app drops the Host check but routes the same operations."""
    keyed = build_app(
        ServerConfig(data_dir=tmp_path / "data", workers=0),
        ApiKeys(frozenset({fingerprint(KEY)})),
    )
    assert app_routes(keyed) == described_routes(openapi_document())


@pytest.mark.node
@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_docs_page_shows_a_valid_openapi_3_0_reading(tmp_path: Path) -> None:
    """The page's Swagger UI (4.x) reads OpenAPI 3.0 only: what its script hands it, made
    from the 3.1 document, must be valid 3.0, or the page shows an error instead of the API."""
    source = tmp_path / "openapi.json"
    source.write_text(json.dumps(openapi_document()))
    script = (
        f"const {{ pageSpec }} = require({json.dumps(str(DOCS_SCRIPT))});"
        f"const fs = require('fs');"
        f"process.stdout.write(JSON.stringify(pageSpec(JSON.parse("
        f"fs.readFileSync({json.dumps(str(source))}, 'utf8')))));"
    )
    shown = json.loads(
        subprocess.run(["node", "-e", script], check=True, capture_output=True, timeout=60).stdout
    )
    assert shown["openapi"] == "3.0.3"
    assert shown["paths"].keys() == openapi_document()["paths"].keys()
    errors = [str(e.message) for e in OpenAPIV30SpecValidator(shown).iter_errors()]
    assert errors == []
