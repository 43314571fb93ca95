"""The ``timefuse`` command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import cast

from timefuse.config import ConfigError, Settings
from timefuse.plugins.registry import PluginError
from timefuse.ports.ingest import BufferUnavailable, StreamUnavailable
from timefuse.ports.store import StoreError

COMMANDS = {
    "serve": "run every role in one process: API, ingest consumer (with Kafka), dispatcher "
    "and maintenance",
    "api": "run the REST API alone (stateless; run several behind a load balancer)",
    "ingest": "run the Kafka ingest consumer alone (copies share the topic's partitions)",
    "dispatch": "run the dispatcher and maintenance (several copies may share one database)",
    "migrate": "create or upgrade the event store's schema, then exit",
    "plugins": "list the loaded delivery types, where each comes from, and its version",
}
BENCH = "load-test a deployment (or one started for the run) against physical baselines"


class _Parser(argparse.ArgumentParser):
    """A parser whose help ends with every setting, gathered only when help is printed.

    Listing the settings loads the plugins (they declare theirs), which a command that only
    runs has no reason to do here.
    """

    settings_epilog = False

    def format_help(self) -> str:
        if self.settings_epilog:
            from timefuse.entrypoints.settings_help import help_text, loaded_groups

            self.epilog = help_text(*loaded_groups())
        return super().format_help()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="timefuse",
        description="Scheduled event orchestrator: events submitted over REST, delivered at "
        "their time, at least once.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.settings_epilog = True
    # Typed as the other modules' command builders expect; every parser here is a _Parser.
    commands = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", metavar="COMMAND"),
    )
    for name, text in COMMANDS.items():
        sub = commands.add_parser(
            name,
            help=text,
            description=text,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        cast(_Parser, sub).settings_epilog = True
        if name in ("serve", "api"):
            sub.add_argument("--host", help="address to listen on (TIMEFUSE_HOST)")
            sub.add_argument("--port", type=int, help="port to listen on (TIMEFUSE_PORT)")
            sub.add_argument(
                "--insecure-no-auth",
                action="store_true",
                help="allow listening beyond loopback without API keys (TIMEFUSE_API_KEYS_FILE)",
            )
    # `timefuse bench ...` is handed to the bench before this parser runs (see main): the
    # bench, its options included, loads only for that command.
    commands.add_parser("bench", help=BENCH, add_help=False)
    from timefuse.entrypoints.auth import add_keys_command

    add_keys_command(commands)
    _add_secrets_command(commands)
    from timefuse.entrypoints.schedules_cli import add_schedules_command

    add_schedules_command(commands)
    return parser


def _add_secrets_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = "make webhook signing secrets"
    secrets = commands.add_parser("secrets", help=text, description=text)
    actions = secrets.add_subparsers(dest="secrets_action", metavar="ACTION", required=True)
    new = actions.add_parser(
        "new",
        help="print a new random whsec_ signing secret (or, with --asymmetric, an ed25519 "
        "whsk_ signing key and its whpk_ public key)",
    )
    new.add_argument(
        "--asymmetric",
        action="store_true",
        help="an ed25519 key pair (v1a signatures): receivers then hold only the public key",
    )


def _run_secrets_command(args: argparse.Namespace) -> int:
    from timefuse.webhooks import new_secret, new_signing_key

    if not args.asymmetric:
        print(new_secret())
        return 0
    signing_key, public_key = new_signing_key()
    print(f"# The signing key, for timefuse only (TIMEFUSE_SIGNING_KEYS_FILE):\n{signing_key}")
    print(f"# The public key, for the receivers:\n{public_key}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["bench"]:
        from timefuse.bench import main as bench

        return bench(arguments[1:])
    parser = build_parser()
    args = parser.parse_args(arguments)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "keys":
        from timefuse.entrypoints.auth import run_keys_command

        return run_keys_command(args)
    if args.command == "secrets":
        return _run_secrets_command(args)
    if args.command == "schedules":
        from timefuse.entrypoints.schedules_cli import run_schedules_command

        return run_schedules_command(args)
    try:
        settings = Settings.from_env()
        return _dispatch(args, settings)
    except (ConfigError, PluginError, ValueError) as exc:
        print(f"timefuse: {exc}", file=sys.stderr)
        return 2
    except (StoreError, BufferUnavailable, StreamUnavailable) as exc:
        print(f"timefuse: cannot reach a service timefuse needs: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    from timefuse.entrypoints.logging import configure_logging

    configure_logging(settings.log.level, settings.log.format)
    if args.command == "plugins":
        return _list_plugins(settings)
    if args.command == "migrate":
        return asyncio.run(_migrate(settings))
    from timefuse.entrypoints.loops import install_uvloop
    from timefuse.entrypoints.runner import StartupError, run

    roles = {
        # With Kafka, serve consumes what its API produced (and wakes its own dispatcher).
        "serve": {"api", "dispatch", "maintenance"}
        | ({"ingest"} if settings.kafka.enabled else set()),
        "api": {"api"},
        "ingest": {"ingest"},
        "dispatch": {"dispatch", "maintenance"},
    }[args.command]
    port = getattr(args, "port", None)
    if port is not None and not 0 <= port <= 65535:
        print(f"timefuse: --port must be between 0 and 65535, got {port}", file=sys.stderr)
        return 2
    try:
        insecure = getattr(args, "insecure_no_auth", False)
        host = getattr(args, "host", None)
        install_uvloop()
        asyncio.run(run(settings, roles, host=host, port=port, insecure_no_auth=insecure))
    except StartupError as exc:
        print(f"timefuse: {exc}", file=sys.stderr)
        return 1
    return 0


def _list_plugins(settings: Settings) -> int:
    from timefuse.plugins.manager import build_registry, load_plugins

    registry = build_registry(load_plugins(settings))
    print(f"{'TYPE':<16}{'VERSION':<12}ORIGIN")
    for delivery_type in registry.types():
        print(f"{delivery_type.name:<16}{delivery_type.version or '-':<12}{delivery_type.origin}")
    return 0


async def _migrate(settings: Settings) -> int:
    from timefuse.adapters.system.clock import SystemClock
    from timefuse.entrypoints.bootstrap import build_store

    store = build_store(settings.store, SystemClock())
    migrator = store.capabilities.migrator
    if migrator is not None:
        await migrator.migrate()
    else:  # a store that owns its schema creates it when it opens
        await store.open()
        await store.close()
    print("timefuse: schema is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
