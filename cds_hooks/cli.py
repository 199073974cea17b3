"""The ``cramp-cds`` command: subcommands dispatched from one table (:data:`COMMANDS`).

To add a subcommand, add ``name: Command(help, configure, run)`` to :data:`COMMANDS`: ``configure`` adds its
arguments to an ``argparse`` sub-parser, ``run`` gets the parsed namespace and returns the exit code.

Exit codes: 0 ok, 2 usage or configuration error (a bad environment variable is named), 1 other failure.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cds_hooks import knowledge_cli
from cds_hooks.admin import cli as feedback_cli
from cds_hooks.batch import cli as batch_cli
from cds_hooks.batch.spark import cli as spark_cli
from cds_hooks.sandbox import cli as sandbox_cli
from cds_hooks.settings import Settings, SettingsError
from plugin.knowledge import KnowledgeError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


@dataclass(frozen=True)
class Command:
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _serve_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="interface to listen on (default: CRAMP_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default: CRAMP_PORT or 8080)")


def _serve(args: argparse.Namespace) -> int:
    """Run the service on Werkzeug's threaded server: for local use (`make run`). Production: gunicorn."""
    settings = Settings.from_env()
    changes = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if changes:
        settings = dataclasses.replace(settings, **changes)
    from cds_hooks.app import create_app

    app = create_app(settings)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # our access log already has one line per request
    logging.getLogger("cramp_cds.cli").info(
        "serving on http://%s:%d/cds-services (production: gunicorn -w 2 -b 127.0.0.1:8080 "
        "'cds_hooks.app:create_app()')", settings.host, settings.port)
    app.run(host=settings.host, port=settings.port, threaded=True, use_reloader=False, debug=False)
    return EXIT_OK


COMMANDS: dict[str, Command] = {
    "serve": Command("run the CDS Hooks service", _serve_args, _serve),
    "review": Command(batch_cli.HELP, batch_cli.configure, batch_cli.run),
    "spark-review": Command(spark_cli.HELP, spark_cli.configure, spark_cli.run),
    "sandbox": Command(sandbox_cli.HELP, sandbox_cli.configure, sandbox_cli.run),
    "feedback-report": Command(feedback_cli.HELP, feedback_cli.configure, feedback_cli.run),
    "knowledge": Command(knowledge_cli.HELP, knowledge_cli.configure, knowledge_cli.run),
}


def version_text() -> str:
    """``cramp-cds <version> (knowledge <version>)``: what is running and which rules it applies."""
    import plugin
    from cds_hooks.version import __version__

    return f"cramp-cds {__version__} (knowledge {plugin.default_knowledge().version})"


class _VersionAction(argparse.Action):
    """``--version``, loading the knowledge only when asked."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cramp-cds", description="CDS Hooks service and review tools for nocturnal leg cramps.")
    parser.add_argument("--version", action=_VersionAction, help="print the version and the knowledge version")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        command.configure(sub.add_parser(name, help=command.help, description=command.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command].run(args)
    except SettingsError as exc:
        print(f"cramp-cds: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KnowledgeError as exc:  # CRAMP_SITE_KNOWLEDGE or a knowledge file that cannot be used
        print(f"cramp-cds: knowledge error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
