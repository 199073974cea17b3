"""The ``cramp-cds`` command: subcommands dispatched from one table (:data:`COMMANDS`).

To add a subcommand, add ``name: Command(help, configure, run)`` to :data:`COMMANDS`: ``configure`` adds its
arguments to an ``argparse`` sub-parser, ``run`` gets the parsed namespace and returns the exit code.

Exit codes: 0 ok, 2 usage or configuration error (a bad environment variable is named), 1 other failure.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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
        "serving on http://%s:%d/cds-services (production: gunicorn -c python:cds_hooks.service.gunicorn_conf "
        "'cds_hooks.app:create_app()')", settings.host, settings.port)
    app.run(host=settings.host, port=settings.port, threaded=True, use_reloader=False, debug=False)
    return EXIT_OK


# A command is a Command, or the module that holds its HELP, configure and run: imported only when that command
# runs (or for --help), so that `cramp-cds serve` does not load the batch review, its reports and the other tools.
COMMANDS: dict[str, Command | str] = {
    "serve": Command("run the CDS Hooks service", _serve_args, _serve),
    "review": "cds_hooks.batch.cli",
    "spark-review": "cds_hooks.batch.spark.cli",
    "sandbox": "cds_hooks.sandbox.cli",
    "feedback-report": "cds_hooks.admin.cli",
    "knowledge": "cds_hooks.knowledge_cli",
}


def command(name: str) -> Command:
    found = COMMANDS[name]
    if isinstance(found, str):
        module = importlib.import_module(found)
        found = Command(module.HELP, module.configure, module.run)
    return found


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


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given the arguments, only the command they name is loaded (the others are listed bare)."""
    parser = argparse.ArgumentParser(
        prog="cramp-cds", description="CDS Hooks service and review tools for nocturnal leg cramps.")
    parser.add_argument("--version", action=_VersionAction, help="print the version and the knowledge version")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    for name in COMMANDS:
        if chosen in COMMANDS and name != chosen:
            sub.add_parser(name)
            continue
        found = command(name)
        found.configure(sub.add_parser(name, help=found.help, description=found.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    try:
        return command(args.command).run(args)
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
