"""A validation worker process (`codec/validation_pool.py` starts and feeds it).

One request per line on stdin, a JSON string: the path of a file to validate. One answer per
line on stdout, in the order asked: {"info": {...}} (OpusStreamInfo's fields), {"invalid":
message} for bytes that are not valid Ogg Opus, {"error": message} for anything else (the
file cannot be read). The process ends at the end of stdin: when the server closes it, or
dies.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
from typing import Any

from codec.errors import InvalidOpusError
from codec.validate import validate_ogg_opus


def answer(path: str) -> dict[str, Any]:
    try:
        return {"info": dataclasses.asdict(validate_ogg_opus(path))}
    except InvalidOpusError as exc:
        return {"invalid": str(exc)}
    except Exception as exc:  # noqa: BLE001 - carried to the server, which raises it
        return {"error": f"{type(exc).__name__}: {exc}"}


def main() -> None:
    # Ctrl-C reaches the whole process group: the server decides when this one ends (by
    # closing stdin), so a terminal's interrupt does not print a traceback per worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        out.write(json.dumps(answer(json.loads(line))).encode() + b"\n")
        out.flush()


if __name__ == "__main__":
    main()
