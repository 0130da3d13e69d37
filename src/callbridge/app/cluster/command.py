"""The ``callbridge cluster`` subcommand: arguments, start-up report, and signals (Ctrl-C drains)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from ...yamlsource import SourceError
from ..config import Config, load_config
from .launcher import DEFAULT_HTTP_PORT, DEFAULT_SIP_PORT, STATE_FILE, Cluster, Launcher, Options
from .procs import StartError

EXIT_FAILED = 1
EXIT_CONFIG_ERROR = 2
EXIT_INTERRUPTED = 130  # Ctrl-C before the cluster was up


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, help="how many workers (default: cluster.workers, 2)")
    parser.add_argument("--config", type=Path, help="the same YAML file `serve` takes, plus its cluster: section")
    parser.add_argument("--host", help="address Kamailio and the workers listen on (default: server.host)")
    parser.add_argument("--sip-port", type=int, default=DEFAULT_SIP_PORT,
                        help=f"Kamailio's SIP port, UDP and TCP (default {DEFAULT_SIP_PORT}); "
                             "worker i listens on SIP port + i")
    parser.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT,
                        help=f"the first worker's HTTP API (default {DEFAULT_HTTP_PORT}); worker i on port + i - 1")
    parser.add_argument("--data-dir", type=Path, help="everything the cluster writes (default: server.data_dir)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def _options(config: Config, args: argparse.Namespace) -> Options:
    return Options(workers=args.workers if args.workers is not None else config.cluster.workers,
                   host=args.host or config.server.host, sip_port=args.sip_port, http_port=args.http_port,
                   data_dir=args.data_dir or config.server.data_dir, log_level=args.log_level)


def report(cluster: Cluster) -> str:
    lines = [f"callbridge cluster ready: {len(cluster.workers)} workers behind Kamailio",
             f"  call:    {cluster.call_uri('<number>')} (UDP and TCP)"]
    lines += [f"  API:     {w.api_url} ({w.worker_id}, pid {w.pid}, SIP {w.sip_uri})" for w in cluster.workers]
    lines += [f"  token:   {cluster.token_source}",
              f"  Redis:   {cluster.redis_url} (pid {cluster.redis_pid})",
              f"  proxy:   kamcmd -s unix:{cluster.ctl_socket} dispatcher.list (pid {cluster.kamailio_pid})",
              f"  drain:   kamcmd -s unix:{cluster.ctl_socket} dispatcher.set_state d 1 <worker SIP URI>, "
              "or POST /api/drain on the worker",
              f"  logs:    {cluster.data_dir}/workers/*/worker.log, kamailio/kamailio.log, redis/redis.log",
              f"  state:   {cluster.data_dir / STATE_FILE}",
              "Ctrl-C drains every worker, then stops Kamailio and Redis."]
    return "\n".join(lines)


async def run(config: Config, options: Options) -> int:
    launcher = Launcher(config, options)
    stop = asyncio.Event()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            print("callbridge cluster: draining the workers (Ctrl-C again ends their calls now)", file=sys.stderr,
                  flush=True)
            stop.set()
        else:
            launcher.hurry()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    starting = loop.create_task(launcher.start(), name="cluster-start")
    interrupted = loop.create_task(stop.wait(), name="cluster-stop")
    failed = loop.create_task(launcher.failed.wait(), name="cluster-failed")
    try:
        await asyncio.wait([starting, interrupted], return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            await launcher.stop()
            return EXIT_INTERRUPTED
        try:
            cluster = starting.result()
        except StartError as exc:
            await launcher.stop()
            print(f"callbridge: cannot start the cluster: {exc}", file=sys.stderr, flush=True)
            return EXIT_FAILED
        print(report(cluster), flush=True)
        await asyncio.wait([interrupted, failed], return_when=asyncio.FIRST_COMPLETED)
        clean = await launcher.stop()
        if launcher.failure is not None:
            print(f"callbridge: the cluster stopped: {launcher.failure}", file=sys.stderr, flush=True)
            return EXIT_FAILED
        return 0 if clean else EXIT_FAILED
    finally:
        for task in (interrupted, failed):
            task.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def main(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config) if args.config is not None else Config.model_validate({})
        from ..phoneline import load_flows

        load_flows(config)  # a broken flow stops start-up here, not in N workers
    except SourceError as exc:
        print(f"callbridge: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    from ..logs import setup_logging

    setup_logging(args.log_level)
    for noisy in ("httpx", "alembic"):  # a line per readiness probe and per migration step says nothing here
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        return asyncio.run(run(config, _options(config, args)))
    except StartError as exc:
        print(f"callbridge: cannot start the cluster: {exc}", file=sys.stderr)
        return EXIT_FAILED
