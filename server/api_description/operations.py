"""Health, readiness, metrics, and this description with its page."""

from __future__ import annotations

from server.api_description.parts import (
    Json,
    error_answer,
    json_content,
    operation,
    path_param,
    ref,
)


def ops_paths() -> Json:
    return {
        "/healthz": {
            "get": operation(
                "healthz",
                "Liveness: the process answers",
                {
                    "200": {
                        "description": "Alive.",
                        "content": json_content(
                            {
                                "type": "object",
                                "required": ["status"],
                                "properties": {"status": {"const": "ok"}},
                            }
                        ),
                    }
                },
                tags=["operations"],
                open_route=True,
            )
        },
        "/readyz": {
            "get": operation(
                "readyz",
                "Readiness: database, blob store, model and backlog",
                {
                    "200": {
                        "description": "Ready.",
                        "content": json_content(ref("schemas", "Ready")),
                    },
                    "503": {
                        "description": "Not ready; `checks` says why.",
                        "content": json_content(ref("schemas", "Ready")),
                    },
                },
                tags=["operations"],
                open_route=True,
            )
        },
        "/metrics": {
            "get": operation(
                "metrics",
                "Prometheus metrics (a key limits the meeting ids named to its own)",
                {
                    "200": {
                        "description": "Prometheus text exposition format 0.0.4.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
                tags=["operations"],
                open_route=True,
            )
        },
        "/openapi.json": {
            "get": operation(
                "openapi",
                "This description",
                {
                    "200": {
                        "description": "OpenAPI 3.1.",
                        "content": json_content(
                            {"type": "object", "required": ["openapi", "paths"]}
                        ),
                    }
                },
                tags=["operations"],
                open_route=True,
            )
        },
        "/docs": {
            "get": operation(
                "docs",
                "This description as a page (Swagger UI, served from the package)",
                {
                    "200": {
                        "description": "The page.",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
                tags=["operations"],
                open_route=True,
            )
        },
        "/docs/{asset}": {
            "parameters": [path_param("asset", "A Swagger UI file the page loads.")],
            "get": operation(
                "docsAsset",
                "A Swagger UI asset",
                {
                    "200": {
                        "description": "The file.",
                        "content": {
                            "text/css": {"schema": {"type": "string"}},
                            "application/javascript": {"schema": {"type": "string"}},
                            "image/png": {"schema": {"type": "string", "format": "binary"}},
                        },
                    },
                    "404": error_answer("ERR_NOT_FOUND: no such asset."),
                },
                tags=["operations"],
                open_route=True,
            ),
        },
        **{
            path: {
                **({"parameters": [param]} if param else {}),
                "get": operation(
                    op_id,
                    summary,
                    {
                        "200": {
                            "description": "The page (it calls the API with the key typed in).",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        }
                    },
                    tags=["app"],
                    open_route=True,
                ),
            }
            for path, op_id, summary, param in [
                ("/", "appMeetings", "The browser app: the meetings list", None),
                (
                    "/app/meetings/{meeting}",
                    "appMeeting",
                    "The browser app: one meeting, live",
                    path_param("meeting", "The meeting's id (read by the page itself)."),
                ),
                ("/app/record", "appRecord", "The browser app: record a meeting", None),
            ]
        },
        "/app/static/{asset}": {
            "parameters": [path_param("asset", "A file the app's pages load.")],
            "get": operation(
                "appAsset",
                "A script or style sheet of the browser app",
                {
                    "200": {
                        "description": "The file.",
                        "content": {
                            "text/css": {"schema": {"type": "string"}},
                            "application/javascript": {"schema": {"type": "string"}},
                        },
                    },
                    "404": error_answer("ERR_NOT_FOUND: no such asset."),
                },
                tags=["app"],
                open_route=True,
            ),
        },
    }
