"""`rollscribe serve | worker | models | record | discord | keys add|list|revoke |
db upgrade|status`."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys


async def _serve(args: argparse.Namespace, argv: list[str]) -> None:
    from aiohttp import web

    from server.app import build_app
    from server.auth import is_loopback
    from server.config import config_from_args
    from server.http_protocol import AppRunner
    from server.key_ring import KeyRing

    config = config_from_args(args)
    try:
        keys = KeyRing(config.api_keys_file, config.api_keys, config.key_limits)
    except (OSError, ValueError) as exc:
        sys.exit(f"rollscribe: cannot load API keys: {exc}")
    if not keys.keyed:
        if not is_loopback(config.host):
            sys.exit(
                f"rollscribe: refusing to listen on {config.host} without API keys: anyone "
                "who can reach it could read every meeting. Set --api-keys-file or "
                "ROLLSCRIBE_API_KEYS, or bind 127.0.0.1."
            )
        if not config.sibling:
            print("rollscribe: no API keys configured: serving loopback only", flush=True)
    from server.meeting_languages import LanguageUnavailable
    from storage.blob_store import BlobStoreError
    from storage.database import DatabaseError
    from storage.schema import SchemaMismatch
    from transcribe.model_catalog import ModelUnavailable

    try:
        app = build_app(config, keys)
    except DatabaseError as exc:  # a malformed --database-url
        sys.exit(_database_error(config.database_url or "", exc))
    except (BlobStoreError, ModelUnavailable, LanguageUnavailable) as exc:
        sys.exit(f"rollscribe: {exc}")
    if config.workers and not config.sibling:
        _check_device(config.device, config.compute_type)
    runner = AppRunner(app, header_timeout_s=config.header_timeout_s)
    try:
        await runner.setup()
    except (SchemaMismatch, BlobStoreError) as exc:
        await runner.cleanup()
        sys.exit(f"rollscribe: {exc}")
    except (OSError, DatabaseError) as exc:
        await runner.cleanup()
        sys.exit(_database_error(config.database_url or "SQLite in the data folder", exc))
    several = config.processes > 1 or config.sibling
    site = web.TCPSite(runner, config.host, config.port, reuse_port=several or None)
    await site.start()
    from server.collector import settle_after_start

    settle_after_start()  # what start-up made is never traversed again: server/collector.py
    port = runner.addresses[0][1] if runner.addresses else config.port
    siblings = None
    if config.processes > 1:
        from server.sibling_processes import sibling_processes

        siblings = sibling_processes(config.processes - 1, argv, port)
        await siblings.start()
    if not config.sibling:
        print(
            f"rollscribe listening on http://{config.host}:{port} (data: {config.data_dir}, "
            f"{config.processes} server process{'es' if config.processes > 1 else ''}, "
            f"event loop {config.event_loop})",
            flush=True,
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    orphan_watch = None
    if config.sibling:
        from server.sibling_processes import stop_when_orphaned

        orphan_watch = asyncio.create_task(stop_when_orphaned(stop))
    await stop.wait()
    if orphan_watch is not None:
        orphan_watch.cancel()
    if siblings is not None:
        await siblings.stop()
    await runner.cleanup()
    if siblings is not None:
        import shutil

        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def _list_models() -> None:
    from transcribe.model_catalog import catalog

    for entry in catalog():
        where = str(entry.path) if entry.path else "-"
        state = "installed" if entry.installed else "not installed"
        print(f"{entry.name:8} {state:13} {entry.note}\n{'':8} {where}")
    print("or --model DIR: any CTranslate2 Whisper folder (config.json, model.bin, ...)")


def _check_device(device: str, compute_type: str | None) -> None:
    """Where the workers will run the model, said (or refused) before they start: each
    worker logs its own choice too, but a refusal there would only restart it forever."""
    import ctranslate2

    from transcribe.engine import EngineUnavailable, choose_device

    try:
        choice = choose_device(device, compute_type, ctranslate2.get_cuda_device_count())
    except EngineUnavailable as exc:
        sys.exit(f"rollscribe: {exc}")
    print(
        f"rollscribe: workers run on {choice.device} ({choice.reason}), {choice.compute_type}",
        flush=True,
    )


def _database_error(url: str, exc: BaseException) -> str:
    from storage.database import printable_url

    return f"rollscribe: cannot use the database {printable_url(url)}: {type(exc).__name__}: {exc}"


def _database_url(args: argparse.Namespace) -> str:
    from pathlib import Path

    from storage.database import sqlite_url

    if args.database_url:
        return str(args.database_url)
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    return sqlite_url(data_dir)


async def _db(command: str, url: str) -> None:
    from storage import schema
    from storage.database import Database, DatabaseError

    try:
        db = Database(url)
    except DatabaseError as exc:
        sys.exit(_database_error(url, exc))
    try:
        if command == "upgrade":
            before, after = await schema.upgrade(db)
            if before == after:
                print(f"schema already at {after}")
            else:
                print(f"schema upgraded: {before or 'empty'} -> {after}")
        else:
            found = await schema.status(db)
            state = "up to date" if found.up_to_date else "needs `rollscribe db upgrade`"
            print(f"schema {found.current or 'empty'}, code {found.head}: {state}")
    except (OSError, DatabaseError) as exc:
        sys.exit(_database_error(url, exc))
    finally:
        await db.close()


# Each command: its help line, and where the function that adds its arguments lives. Only
# the command being run has its module imported: the others' would cost every start (the
# Discord library, the recorder's audio stack, the server's web framework and ORM: about
# 0.6 s of CPU for a server, 1.5 s for `keys list`, which needs none of them).
COMMANDS: dict[str, tuple[str, str | None]] = {
    "serve": ("run the server (and its worker pool)", "server.config:add_serve_arguments"),
    "worker": (
        "run one transcription worker process",
        "transcribe.worker_config:add_worker_arguments",
    ),
    "record": (
        "record audio files as a meeting (desktop recorder)",
        "client.recorder:add_record_arguments",
    ),
    "discord": (
        "a Discord bot that records voice channels",
        "client.discord_bot.cli:add_discord_arguments",
    ),
    "keys": (
        "API keys: add (prints a token once), list, revoke",
        "server.keys_cli:add_keys_arguments",
    ),
    "models": ("the Whisper models installed, and where", None),
    "db": ("database schema: upgrade (apply migrations) or status", None),
}


def _chosen_command(argv: list[str]) -> str | None:
    """The command named on the command line: the first word that is not an option (the
    top level has no option that takes a value)."""
    return next((word for word in argv if not word.startswith("-")), None)


def _parser(
    chosen: str | None,
) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(prog="rollscribe")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {}
    for name, (help_line, adder) in COMMANDS.items():
        # No abbreviations for the bot: "--token X" must not be taken for --token-file (the
        # token is never a flag, so a mistyped one is refused rather than read as a path).
        command = sub.add_parser(name, help=help_line, allow_abbrev=name != "discord")
        commands[name] = command
        if name == chosen and adder is not None:
            module, function = adder.split(":")
            getattr(importlib.import_module(module), function)(command)
    db = commands["db"]
    db.add_argument("db_command", choices=["upgrade", "status"])
    db.add_argument("--database-url", default=os.environ.get("ROLLSCRIBE_DATABASE_URL"))
    db.add_argument("--data-dir", default=os.environ.get("ROLLSCRIBE_DATA_DIR", "./data"))
    return parser, commands


def main(argv: list[str] | None = None) -> None:
    words = list(sys.argv[1:] if argv is None else argv)
    parser, commands = _parser(_chosen_command(words))
    serve = commands["serve"]
    args = parser.parse_args(words)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr
    )
    # Alembic narrates each plugin and migration context at INFO; `db` prints the outcome.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if args.command == "serve":
        from server.config import resolve_processes
        from server.event_loop import EVENT_LOOPS, run_on

        if args.event_loop not in EVENT_LOOPS:  # argparse checks a flag's value, not a default
            serve.error(
                f"ROLLSCRIBE_EVENT_LOOP: {args.event_loop!r} is not one of {', '.join(EVENT_LOOPS)}"
            )
        serve_argv = words[words.index("serve") + 1 :]
        args.processes = resolve_processes(args.processes, args.database_url)
        if args.processes > 1 and not args.sibling:
            from pathlib import Path

            from server.sibling_processes import metrics_folder

            metrics_folder(Path(args.data_dir))  # before prometheus_client is imported
        from server.heap_trim import limit_arenas

        limit_arenas()  # before the server's threads start
        run_on(args.event_loop, _serve(args, serve_argv))
    elif args.command == "models":
        _list_models()
    elif args.command == "record":
        from client.recorder import run_from_args as record_from_args

        record_from_args(args)
    elif args.command == "discord":
        from client.discord_bot.cli import run_from_args as discord_from_args

        discord_from_args(args)
    elif args.command == "db":
        asyncio.run(_db(args.db_command, _database_url(args)))
    elif args.command == "keys":
        from server.keys_cli import run_from_args as keys_from_args

        keys_from_args(args)
    elif args.command == "worker":
        from transcribe.worker import run_from_args

        run_from_args(args)


if __name__ == "__main__":
    main()
