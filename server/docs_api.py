"""GET /openapi.json (the description) and GET /docs (a page that shows it).

The page is Swagger UI from the swagger-ui-bundle package, served from disk: it needs no
CDN and works with no network. Only the files the page loads are served, by name.
"""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp import web
from swagger_ui_bundle import swagger_ui_path

from server.api_description import openapi_document
from server.errors import ApiError, Errors

PAGE_DIR = Path(__file__).parent / "docs_page"
SWAGGER_DIR = Path(str(swagger_ui_path))
# name -> (folder, content type). An allow-list: a path parameter never reaches the disk.
ASSETS: dict[str, tuple[Path, str]] = {
    "swagger-ui.css": (SWAGGER_DIR, "text/css"),
    "swagger-ui-bundle.js": (SWAGGER_DIR, "application/javascript"),
    "swagger-ui-standalone-preset.js": (SWAGGER_DIR, "application/javascript"),
    "favicon-32x32.png": (SWAGGER_DIR, "image/png"),
    "favicon-16x16.png": (SWAGGER_DIR, "image/png"),
    "rollscribe-docs.js": (PAGE_DIR, "application/javascript"),
}


class DocsApi:
    def __init__(self, keys_enabled: bool) -> None:
        # Rendered once: the description does not change while the server runs. A server
        # without keys says so: it asks for no key and answers no 401.
        self.document = json.dumps(openapi_document(keys_enabled), indent=1).encode()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/openapi.json", self.openapi),
            web.get("/docs", self.page),
            web.get("/docs/{asset}", self.asset),
        ]

    async def openapi(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.document, content_type="application/json")

    async def page(self, _request: web.Request) -> web.FileResponse:
        return web.FileResponse(
            PAGE_DIR / "index.html", headers={"Content-Type": "text/html; charset=utf-8"}
        )

    async def asset(self, request: web.Request) -> web.FileResponse:
        name = request.match_info["asset"]
        found = ASSETS.get(name)
        if found is None:
            raise ApiError(Errors.ROUTE_NOT_FOUND, f"no docs asset {name[:100]!r}")
        folder, content_type = found
        return web.FileResponse(folder / name, headers={"Content-Type": content_type})
