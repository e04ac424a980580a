"""The browser app: the meetings list (`/`), one meeting live (`/app/meetings/{id}`) and a
recorder (`/app/record`), served from files in the package (`server/web_app/`): no build
step, no CDN, no network at run time. tus-js-client's browser build is vendored there
(`vendor/`, with its licence) because the page must work offline and PyPI has no package of
it. Pages are open like /docs (they hold no data); every call they make carries the key.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from server.errors import ApiError, Errors

APP_DIR = Path(__file__).parent / "web_app"
PAGES = {"list": "index.html", "meeting": "meeting.html", "record": "record.html"}
TYPES = {".js": "application/javascript", ".css": "text/css", ".html": "text/html"}
# An allow-list of the assets by name: a path parameter never reaches the disk.
ASSETS = {
    p.relative_to(APP_DIR).as_posix(): p
    for p in APP_DIR.rglob("*")
    if p.is_file() and p.suffix in (".js", ".css") and p.name not in PAGES.values()
}
NO_CACHE = {"Cache-Control": "no-cache"}  # a new server version's pages load at once


class WebPages:
    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self.page("list")),
            web.get("/app/meetings/{meeting}", self.page("meeting")),
            web.get("/app/record", self.page("record")),
            web.get("/app/static/{asset:.+}", self.asset),
        ]

    def page(self, name: str):  # type: ignore[no-untyped-def]
        async def handler(_request: web.Request) -> web.FileResponse:
            return web.FileResponse(
                APP_DIR / PAGES[name],
                headers={"Content-Type": "text/html; charset=utf-8", **NO_CACHE},
            )

        return handler

    async def asset(self, request: web.Request) -> web.FileResponse:
        name = request.match_info["asset"]
        path = ASSETS.get(name)
        if path is None:
            raise ApiError(Errors.ROUTE_NOT_FOUND, f"no app asset {name[:100]!r}")
        return web.FileResponse(
            path, headers={"Content-Type": TYPES[path.suffix] + "; charset=utf-8", **NO_CACHE}
        )
