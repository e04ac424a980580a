"""`rollscribe discord`: arguments, the bot token, and running the bot."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from client.discord_bot.bot import BotConfig, RecorderBot

TOKEN_ENV = "DISCORD_TOKEN"


def add_discord_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", required=True, help="e.g. http://127.0.0.1:8080")
    parser.add_argument("--api-key", default=os.environ.get("ROLLSCRIBE_API_KEY"))
    parser.add_argument(
        "--token-file",
        help=f"a file holding the bot token (otherwise ${TOKEN_ENV}); never a flag, so it "
        "stays out of shell history and process lists",
    )
    parser.add_argument(
        "--segment-seconds",
        type=float,
        default=30.0,
        help="longest span of one uploaded segment per speaker; also the most a crash loses",
    )
    parser.add_argument(
        "--pause-seconds",
        type=float,
        default=10.0,
        help="a speaker's pauses up to this stay in one segment; a longer silence closes it "
        "(uploaded then) and is never uploaded itself",
    )
    parser.add_argument(
        "--language",
        help="the language of the meetings it records: auto (detected per speaker) or a code "
        "such as en, de, es (default: the server's)",
    )
    parser.add_argument("--spool", default="./rollscribe-discord-spool")
    parser.add_argument(
        "--spool-max-bytes",
        type=int,
        default=1024 * 1024 * 1024,
        help="cap on segments waiting for upload, all meetings together; at the cap new "
        "speech is not recorded (logged, shown by /record status, a gap in the transcript)",
    )
    parser.add_argument(
        "--leave-after",
        type=float,
        default=5.0,
        metavar="MINUTES",
        help="finalize and leave when only bots have been in the channel this long",
    )
    parser.add_argument(
        "--role",
        action="append",
        default=None,
        help="a role (name or id) whose members may start and stop recordings; repeat for "
        "several; '@everyone' lets anyone (default: a role named 'rollscribe')",
    )
    parser.add_argument(
        "--no-sync-commands",
        action="store_true",
        help="do not register the slash commands with Discord at start",
    )


def read_token(token_file: str | None) -> str:
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise SystemExit(f"rollscribe discord: cannot read --token-file: {exc}") from None
        if not token:
            raise SystemExit(f"rollscribe discord: {token_file} is empty")
        return token
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise SystemExit(
            f"rollscribe discord: no bot token: set ${TOKEN_ENV} or pass --token-file FILE"
        )
    return token


def config_from_args(args: argparse.Namespace) -> BotConfig:
    for name in ("segment_seconds", "pause_seconds", "leave_after"):
        if getattr(args, name) <= 0:
            raise SystemExit(f"rollscribe discord: --{name.replace('_', '-')} must be positive")
    if args.spool_max_bytes <= 0:
        raise SystemExit("rollscribe discord: --spool-max-bytes must be positive")
    return BotConfig(
        server=args.server,
        spool=Path(args.spool),
        api_key=args.api_key,
        segment_seconds=args.segment_seconds,
        pause_seconds=args.pause_seconds,
        spool_max_bytes=args.spool_max_bytes,
        leave_after_minutes=args.leave_after,
        roles=args.role or ["rollscribe"],
        sync_commands=not args.no_sync_commands,
        language=args.language,
    )


def run_from_args(args: argparse.Namespace) -> None:
    config = config_from_args(args)
    token = read_token(args.token_file)
    config.spool.mkdir(parents=True, exist_ok=True)
    logging.getLogger("discord").setLevel(logging.INFO)
    RecorderBot(config).run(token, log_handler=None)
