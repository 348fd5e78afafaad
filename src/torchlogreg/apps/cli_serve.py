"""The web servers: `torchlogreg serve` (a run's page and API) and `torchlogreg playground`.

    torchlogreg serve runs/tutorial --port 8000
    torchlogreg playground --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import sys

from ..base.exceptions import ConfigError
from .cli_common import add_run_dir, printable

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def cmd_serve(args: argparse.Namespace) -> int:
    from ..runfolder.checkpoints import load_run
    from .serving import check_servable, serve

    _check_port_number(args.port)
    if args.workers < 1:
        raise ConfigError(f"--workers must be an integer >= 1, got {args.workers}")
    run = load_run(args.run_dir)  # a broken run folder fails here, before anything is announced
    check_servable(run)
    _claim_address(args.host, args.port)
    print(printable(f"serving {args.run_dir} on http://{args.host}:{args.port}/ (Ctrl-C to stop)"))
    serve(args.run_dir, args.host, args.port, args.workers, run=run)
    return 0


def cmd_playground(args: argparse.Namespace) -> int:
    from .playground import create_app, serve_playground

    _check_port_number(args.port)
    if args.max_trainings < 1:
        raise ConfigError(f"--max-trainings must be an integer >= 1, got {args.max_trainings}")
    local = args.host in LOCAL_HOSTS
    app = create_app(args.data_root, tuple(args.dataset_folder), args.runs, args.max_trainings, local)
    _claim_address(args.host, args.port)
    print(printable(f"playground on http://{args.host}:{args.port}/ (Ctrl-C to stop)"))
    serve_playground(app, args.host, args.port)
    return 0


def _check_port_number(port: int) -> None:
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be in 1..65535, got {port}")


def _claim_address(host: str, port: int) -> None:
    """Before a server starts: the warning for a public --host, and a port already taken as one line."""
    _warn_if_public(host)
    _check_port_free(host, port)


def _add_address_options(parser: argparse.ArgumentParser) -> None:
    """--host and --port of a web server (serve, playground): loopback unless asked otherwise."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)"
    )
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")


def _warn_if_public(host: str) -> None:
    if host not in LOCAL_HOSTS:
        print(
            f"warning: --host {printable(host)} accepts connections from other machines; the API has "
            "no authentication: put it behind a reverse proxy (README: Security)",
            file=sys.stderr,
        )


def _check_port_free(host: str, port: int) -> None:
    import socket

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as error:
        raise ConfigError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None


def serve_parser(commands) -> None:
    serve = commands.add_parser(
        "serve",
        help="a web page to draw digits on, and an HTTP API (needs torchlogreg[serve])",
        description="Serve the run: / is a drawing page, POST /api/predict takes an image upload (field "
        "'file') or JSON {'pixels': 28x28}, GET /api/model, GET /healthz, docs at /docs.",
    )
    add_run_dir(serve)
    _add_address_options(serve)
    serve.add_argument(
        "--workers", type=int, default=1, help="server processes, e.g. one per core (default: 1)"
    )
    serve.set_defaults(handler=cmd_serve)


def playground_parser(commands) -> None:
    playground = commands.add_parser(
        "playground",
        help="train in the browser and watch the model learn, live (needs torchlogreg[serve])",
        description="A page to set up runs, watch curves, templates and mistakes change as it trains, "
        "change settings on the fly, compare runs and save them as run folders.",
    )
    playground.add_argument(
        "--data-root",
        metavar="DIR",
        help="folder holding the built-in datasets (default: $TORCHLOGREG_DATA, else ~/.cache/torchlogreg)",
    )
    playground.add_argument(
        "--dataset-folder", action="append", default=[], metavar="DIR", help="also offer this dataset folder"
    )
    playground.add_argument(
        "--runs", default="runs", metavar="DIR", help="where 'save run' writes (default: runs)"
    )
    playground.add_argument(
        "--max-trainings", type=int, default=2, metavar="N", help="trainings at once, all pages (default: 2)"
    )
    _add_address_options(playground)
    playground.set_defaults(handler=cmd_playground)
