"""`rollscribe serve | worker | record`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from aiohttp import web


async def _serve(args: argparse.Namespace) -> None:
    from server.app import build_app
    from server.auth import is_loopback, load_api_keys
    from server.config import config_from_args

    config = config_from_args(args)
    try:
        keys = load_api_keys(config.api_keys_file, config.api_keys)
    except (OSError, ValueError) as exc:
        sys.exit(f"rollscribe: cannot load API keys: {exc}")
    if not keys.enabled:
        if not is_loopback(config.host):
            sys.exit(
                f"rollscribe: refusing to listen on {config.host} without API keys: anyone "
                "who can reach it could read every meeting. Set --api-keys-file or "
                "ROLLSCRIBE_API_KEYS, or bind 127.0.0.1."
            )
        print("rollscribe: no API keys configured: serving loopback only", flush=True)
    app = build_app(config, keys)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    port = runner.addresses[0][1] if runner.addresses else config.port
    print(
        f"rollscribe listening on http://{config.host}:{port} (data: {config.data_dir})", flush=True
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rollscribe")
    sub = parser.add_subparsers(dest="command", required=True)

    from server.config import add_serve_arguments

    serve = sub.add_parser("serve", help="run the server (and its worker pool)")
    add_serve_arguments(serve)

    from transcribe.worker_config import add_worker_arguments

    worker = sub.add_parser("worker", help="run one transcription worker process")
    add_worker_arguments(worker)

    from client.recorder import add_record_arguments

    record = sub.add_parser("record", help="record audio files as a meeting (desktop recorder)")
    add_record_arguments(record)

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr
    )
    if args.command == "serve":
        asyncio.run(_serve(args))
    elif args.command == "record":
        from client.recorder import run_from_args as record_from_args

        record_from_args(args)
    elif args.command == "worker":
        from transcribe.worker import run_from_args

        run_from_args(args)


if __name__ == "__main__":
    main()
