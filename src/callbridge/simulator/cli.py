"""``callbridge test-call``: arguments, the run, and the exit status (see runner.py)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import sys
from pathlib import Path


from ..yamlsource import Position, SourceError
from .report import EXIT_CONFIG_ERROR, SetupError
from .runner import TestCall
from .script import load_script


# -- the command --------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("script", type=Path, help="the YAML test script (see docs/TESTCALL.md)")
    parser.add_argument("--target", help="SIP URI to call, instead of the script's target:")
    parser.add_argument("--bind", help="local address for SIP and RTP (default: 127.0.0.1 for a local "
                                       "target, else the address routed towards it)")
    parser.add_argument("--save-audio", type=Path, metavar="FILE.wav", help="write everything heard to a WAV file")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])


def main(args: argparse.Namespace) -> int:
    try:
        script = load_script(args.script, target=args.target)
        if args.bind is not None:
            ipaddress.ip_address(args.bind)
    except SourceError as exc:
        return _config_error(args, str(exc))
    except ValueError:
        return _config_error(args, f"{Position('<command line>', 1, 1)}: --bind: {args.bind!r} is not an IP address")
    from ..app.logs import setup_logging

    setup_logging(args.log_level)
    try:
        report = asyncio.run(TestCall(script, bind=args.bind).run(save_audio=args.save_audio))
    except SourceError as exc:
        return _config_error(args, str(exc))
    except SetupError as exc:
        return _config_error(args, f"cannot run the test call: {exc}")
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.to_text(), flush=True)
    return report.exit_status


def _config_error(args: argparse.Namespace, message: str) -> int:
    if args.json:
        print(json.dumps({"script": str(args.script), "outcome": "error", "exit_status": EXIT_CONFIG_ERROR,
                          "message": message, "steps": []}, indent=2))
    print(f"callbridge test-call: {message}", file=sys.stderr)
    return EXIT_CONFIG_ERROR
