"""The ``callbridge`` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from .. import __version__
from ..yamlsource import SourceError
from .config import Config, load_config

EXIT_CONFIG_ERROR = 2
EXIT_PORT_IN_USE = 2  # like a config error: the command line or config must change before it can start
EXIT_CANNOT_START = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callbridge",
                                     description="Answer phone calls over SIP and bridge them to voice AI.")
    parser.add_argument("--version", action="version", version=f"callbridge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the phone line (the built-in demo without --config)",
                                description="Listen for SIP (UDP and TCP, TLS when configured) and serve HTTP.")
    serve.add_argument("--config", type=Path, help="YAML config file; without it the built-in demo line runs")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--sip-port", type=int, help="SIP UDP and TCP port (default 5060; 0 picks a free one)")
    serve.add_argument("--sips-port", type=int, help="SIP over TLS port (needs server.tls in the config)")
    serve.add_argument("--http-port", type=int, help="HTTP API port (default 8080; 0 picks a free one)")
    serve.add_argument("--data-dir", type=Path, help="where calls and recordings are stored (default ./data)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--log-format", default="auto", choices=["auto", "json", "text"],
                       help="text lines on a terminal, JSON lines otherwise (default auto)")

    check = commands.add_parser("check-config", help="validate a config file and exit",
                                description="Load and validate a config file; print file:line:column on error.")
    check.add_argument("config", type=Path)

    test_call = commands.add_parser("test-call", help="dial a line and run a scripted test call",
                                    description="Call a SIP line, run a YAML script of steps (listen, press, say, "
                                                "expect), print a report. Exit 0 pass, 1 fail, 2 script error, "
                                                "3 call not placed. See docs/TESTCALL.md.")
    from ..simulator.cli import add_arguments as add_test_call_arguments

    add_test_call_arguments(test_call)

    cluster = commands.add_parser("cluster", help="run Redis, Kamailio and N workers on this machine",
                                  description="Start Redis, Kamailio (SIP on --sip-port) and N `serve` workers behind "
                                              "it; Ctrl-C drains the workers, then stops it all. See docs/CLUSTER.md.")
    from .cluster.command import add_arguments as add_cluster_arguments

    add_cluster_arguments(cluster)
    return parser


def _load(path: Path | None) -> Config:
    return Config.model_validate({}) if path is None else load_config(path)


def _apply_overrides(config: Config, args: argparse.Namespace) -> Config:
    server = config.server
    for option, attribute in (("host", "host"), ("sip_port", "sip_port"), ("sips_port", "sips_port"),
                              ("http_port", "http_port"), ("data_dir", "data_dir")):
        value = getattr(args, option)
        if value is not None:
            setattr(server, attribute, value)
    if server.sips_port is not None and server.tls is None:
        raise SourceError(_cli_position(), "--sips-port needs server.tls (cert and key) in the config")
    return config


def _cli_position():
    from ..yamlsource import Position

    return Position("<command line>", 1, 1)


def _check_flows(config: Config) -> dict:
    from .phoneline import load_flows

    return load_flows(config)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "test-call":
        from ..simulator.cli import main as test_call

        return test_call(args)
    if args.command == "cluster":
        from .cluster.command import main as cluster

        return cluster(args)
    try:
        if args.command == "check-config":
            config = load_config(args.config)
            flows = _check_flows(config)
            for flow in flows.values():
                for warning in flow.warnings:
                    print(f"callbridge: warning: {warning}", file=sys.stderr)
            print(f"{args.config}: ok ({len(flows)} flows: {', '.join(sorted(flows))})")
            return 0
        config = _apply_overrides(_load(args.config), args)
        _check_flows(config)  # a broken flow file stops start-up with file:line, like a broken config
    except SourceError as exc:
        print(f"callbridge: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    from .bind_errors import PortInUse
    from .logs import setup_logging
    from .secretbox import SecretError
    from .server import serve

    setup_logging(args.log_level, args.log_format)
    try:
        asyncio.run(serve(config))  # returns once drained (SIGTERM, SIGINT or POST /api/drain): exit 0
    except PortInUse as exc:
        print(f"callbridge: cannot start: {exc}", file=sys.stderr)
        return EXIT_PORT_IN_USE
    except (OSError, SecretError) as exc:
        print(f"callbridge: cannot start: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    except KeyboardInterrupt:  # Ctrl-C before start-up finished: nothing to drain yet
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
