"""Building blocks of the description: references, error answers, operations, parameters."""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]


def ref(kind: str, name: str) -> Json:
    return {"$ref": f"#/components/{kind}/{name}"}


def json_content(schema: Json) -> Json:
    return {"application/json": {"schema": schema}}


def error_answer(description: str, headers: Json | None = None) -> Json:
    response: Json = {"description": description, "content": json_content(ref("schemas", "Error"))}
    if headers:
        response["headers"] = headers
    return response


def tus_error(description: str, **extra_headers: Json) -> Json:
    return error_answer(
        description, {"Tus-Resumable": ref("headers", "Tus-Resumable"), **extra_headers}
    )


STORAGE_FULL = (
    "ERR_STORAGE_FULL: the server's disk is full; what the request wrote past the last "
    "acknowledged offset was dropped (HEAD tells the offset). Retry-After says when to try "
    "again."
)

# A path parameter holding NUL: no id or track name does (server/path_params.py).
PATH_NAMES_NOTHING = " Or ERR_NOT_FOUND: the path holds a NUL, which no id or name does."

# What any route may answer whatever it does: the middlewares' refusals.
UNAUTHORIZED = error_answer(
    "ERR_UNAUTHORIZED: the server has API keys and the request names none of them.",
    {"WWW-Authenticate": ref("headers", "WWW-Authenticate")},
)
HOST_REFUSED = (
    "ERR_HOST_NOT_ALLOWED: the server has no API keys and the Host header is not a loopback "
    "name nor the host of --public-url (DNS rebinding)."
)
INTERNAL = error_answer("ERR_INTERNAL: a server fault (logged); never expected.")
DATABASE_UNAVAILABLE = (
    "ERR_DATABASE_UNAVAILABLE: the database is down, restarting or out of connections; "
    "nothing of the request was kept. Or ERR_BLOB_STORE_UNAVAILABLE: the S3-compatible "
    "blob store cannot be reached or cannot serve (once the server's own retries are spent); "
    "bytes acknowledged before are kept (HEAD tells the offset). Retry-After says when to "
    "try again."
)
BODY_TOO_LARGE = error_answer("ERR_BODY_TOO_LARGE: the JSON body is over 1 MiB.")
BODY_TOO_SLOW = error_answer(
    "ERR_READ_TIMEOUT: the JSON body did not arrive whole within --read-timeout-seconds."
)
UPLOAD_BYTES_LIMIT = (
    "ERR_UPLOAD_BYTES_LIMIT: the key's upload bytes for this UTC day "
    "(--max-upload-bytes-per-key-per-day) would be passed; Retry-After says when it resets."
)


def common_responses(open_route: bool = False, tus: bool = False) -> Json:
    """What any route may answer whatever it does: the middlewares' refusals."""
    responses: Json = {
        "403": tus_error(HOST_REFUSED) if tus else error_answer(HOST_REFUSED),
        "500": INTERNAL,
        "503": tus_error(DATABASE_UNAVAILABLE, **{"Retry-After": ref("headers", "Retry-After")})
        if tus
        else error_answer(DATABASE_UNAVAILABLE, {"Retry-After": ref("headers", "Retry-After")}),
    }
    if not open_route:
        responses["401"] = (
            tus_error(
                "ERR_UNAUTHORIZED: the server has API keys and the request names none.",
                **{"WWW-Authenticate": ref("headers", "WWW-Authenticate")},
            )
            if tus
            else UNAUTHORIZED
        )
    return responses


OPEN_SECURITY: list[Json] = [{}, {"bearerAuth": []}]


def operation(
    operation_id: str,
    summary: str,
    responses: Json,
    *,
    tags: list[str],
    description: str = "",
    parameters: list[Json] | None = None,
    body: Json | None = None,
    open_route: bool = False,
    tus: bool = False,
) -> Json:
    op: Json = {
        "operationId": operation_id,
        "summary": summary,
        "tags": tags,
        "responses": {**common_responses(open_route, tus), **responses},
    }
    if description:
        op["description"] = description
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = body
    if open_route:
        op["security"] = OPEN_SECURITY
    return op


def path_param(name: str, description: str, schema: Json | None = None) -> Json:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema or {"type": "string", "minLength": 1},
    }


def header_param(name: str, description: str, schema: Json, required: bool = False) -> Json:
    return {
        "name": name,
        "in": "header",
        "required": required,
        "description": description,
        "schema": schema,
    }


def response_headers(*names: str, optional: tuple[str, ...] = ()) -> Json:
    headers = {name: ref("headers", name) for name in names}
    for name in optional:
        headers[name] = ref("headers", name + "-optional")
    return headers


def json_body(schema_name: str, required: bool) -> Json:
    return {
        "required": required,
        "description": "A JSON object. An empty body reads as {}.",
        "content": json_content(ref("schemas", schema_name)),
    }
