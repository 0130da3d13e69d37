"""`callbridge cluster`: Redis, Kamailio and N workers on one machine, started and stopped in order.

Start: check binaries and ports, prepare what the workers share (API token, key for secrets, the
database's schema), write Kamailio's and each worker's config, start Redis, the workers and Kamailio,
and wait until Redis answers PING, every worker's /healthz says ok and Kamailio's probes mark every
worker up. Stop: drain every worker (SIGTERM), wait for them to exit, then stop Kamailio and Redis.

Benchmarks and tests use :func:`running_cluster`::

    async with running_cluster(config, workers=2, sip_port=5060, http_port=8080, data_dir=Path("c")) as cluster:
        cluster.call_uri("service")          # sip:service@127.0.0.1:5060, through Kamailio
        [w.api_url for w in cluster.workers] # each worker's HTTP API (token: cluster.api_token)
        [w.pid for w in cluster.workers]     # and its process, e.g. to kill one
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ..auth import load_or_create_token
from ..config import Config
from ..secretbox import KEY_ENV, load_key
from . import kamailio, probes, workerconf
from .procs import ManagedProcess, StartError, describe_exit, find_binary

log = logging.getLogger("callbridge.cluster")

STARTUP_TIMEOUT_S = 180.0  # the first start on a machine may render prompts and assemble the speech model
REDIS_TIMEOUT_S = 10.0
PROXY_UP_TIMEOUT_S = 15.0  # after the workers are ready: a few of Kamailio's 2 s probe rounds
READY_POLL_S = 0.2  # what is probed is another process's state: there is no event to wait on
DRAIN_GRACE_S = 30.0  # past server.drain_deadline_s before a worker that still has not exited is killed
STATE_FILE = "cluster.json"
DEFAULT_SIP_PORT = 5060
DEFAULT_HTTP_PORT = 8080


@dataclass(frozen=True)
class ClusterWorker:
    worker_id: str
    pid: int
    api_url: str
    sip_uri: str
    sip_port: int
    http_port: int
    data_dir: Path
    config_path: Path
    log_path: Path


@dataclass
class Cluster:
    """A running cluster: where to call, each worker's API and process, and the helpers' processes."""

    host: str
    sip_port: int
    workers: list[ClusterWorker]
    api_token: str
    token_source: str  # "api.token in <file>" or the path of the generated token file
    redis_url: str
    redis_pid: int
    kamailio_pid: int
    ctl_socket: Path
    data_dir: Path
    _proxy_files: kamailio.ProxyFiles | None = field(repr=False, default=None)

    @property
    def sip_address(self) -> str:
        return kamailio.host_port(self.host, self.sip_port)

    def call_uri(self, user: str = "service") -> str:
        return f"sip:{user}@{self.sip_address}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_token}"}

    async def dispatcher_states(self) -> dict[str, str]:
        """worker SIP URI -> Kamailio's dispatcher flags (AP: up, IP: down after probes, DX: disabled)."""
        assert self._proxy_files is not None
        return await probes.dispatcher_states(find_binary("kamcmd"), self._proxy_files)

    def describe(self) -> dict[str, Any]:
        """What cluster.json holds: enough for an operator, a test or a benchmark to find everything."""
        return {
            "sip": self.call_uri("<number>"), "host": self.host, "sip_port": self.sip_port,
            "api_token": self.token_source, "redis_url": self.redis_url, "redis_pid": self.redis_pid,
            "kamailio_pid": self.kamailio_pid, "ctl_socket": str(self.ctl_socket),
            "drain_command": f"kamcmd -s unix:{self.ctl_socket} dispatcher.set_state d 1 <worker sip_uri>",
            "workers": [{key: str(value) if isinstance(value, Path) else value for key, value in asdict(w).items()}
                        for w in self.workers],
        }


@dataclass(frozen=True)
class Options:
    workers: int
    host: str
    sip_port: int
    http_port: int
    data_dir: Path
    log_level: str = "info"
    startup_timeout_s: float = STARTUP_TIMEOUT_S


class Launcher:
    """Owns the child processes from start to stop; :meth:`stop` is safe after a failed start."""

    def __init__(self, config: Config, options: Options) -> None:
        self.config = config
        self.options = options
        self.redis: ManagedProcess | None = None
        self.kamailio: ManagedProcess | None = None
        self.workers: dict[str, ManagedProcess] = {}
        self.failed = asyncio.Event()  # Kamailio or Redis died: the cluster cannot go on
        self.failure: str | None = None

    async def start(self) -> Cluster:
        options = self.options
        binaries = {name: find_binary(name) for name in ("redis-server", "kamailio", "kamcmd")}
        try:
            host = kamailio.concrete_ip(options.host, "--host")
            layout = workerconf.plan(self.config, workers=options.workers, host=host, sip_port=options.sip_port,
                                     http_port=options.http_port, data_dir=options.data_dir)
            proxy = self._proxy_settings(layout)
            kamailio.render_config(proxy)  # refuses a value it cannot write safely before anything is created
        except (workerconf.LayoutError, kamailio.ProxyConfigError) as exc:
            raise StartError(str(exc)) from None
        probes.check_ports(host, [p for p in layout.tcp_ports() if p[1] != "Redis"], layout.udp_ports(),
                           [(layout.redis_port, "Redis")])
        self._warn_overridden()
        token, token_source, files = await self._prepare(layout, proxy)
        await self._spawn(layout, binaries, files)
        started = time.monotonic()
        async with httpx.AsyncClient() as client:
            for worker in layout.workers:
                remaining = options.startup_timeout_s - (time.monotonic() - started)
                await self._wait_for(f"worker {worker.worker_id} to be ready ({worker.api_url}/healthz)",
                                     remaining, functools.partial(probes.worker_ready, client, worker.api_url))
        await self._wait_for("Kamailio to mark every worker up (dispatcher.list)", PROXY_UP_TIMEOUT_S,
                             lambda: self._all_up(binaries["kamcmd"], files, layout))
        assert self.redis is not None and self.kamailio is not None  # _spawn started both
        cluster = Cluster(
            host=host, sip_port=layout.sip_port, api_token=token, token_source=token_source,
            redis_url=layout.redis_url, redis_pid=self.redis.pid, kamailio_pid=self.kamailio.pid,
            ctl_socket=files.ctl_socket, data_dir=layout.data_dir, _proxy_files=files,
            workers=[ClusterWorker(w.worker_id, self.workers[w.worker_id].pid, w.api_url, w.sip_uri, w.sip_port,
                                   w.http_port, w.data_dir, w.config_path, w.data_dir / "worker.log")
                     for w in layout.workers])
        state = layout.data_dir / STATE_FILE
        state.write_text(json.dumps(cluster.describe(), indent=2) + "\n", encoding="utf-8")
        return cluster

    async def _prepare(self, layout: workerconf.Layout,
                       proxy: kamailio.ProxySettings) -> tuple[str, str, kamailio.ProxyFiles]:
        """What the workers share (token, key, schema) and every config file; nothing runs yet."""
        layout.data_dir.mkdir(parents=True, exist_ok=True)
        (layout.data_dir / STATE_FILE).unlink(missing_ok=True)  # a stale one would name dead pids
        token, token_source = self._api_token(layout.data_dir)
        shared = workerconf.Shared(token, workerconf.shared_database_url(self.config, layout.data_dir),
                                   self._secret_key_file(layout.data_dir))
        await self._migrate(shared.database_url, layout.data_dir)
        files = kamailio.write_proxy_files(proxy)
        for worker in layout.workers:
            workerconf.write_worker_config(self.config, layout, worker, shared)
        return token, token_source, files

    async def _spawn(self, layout: workerconf.Layout, binaries: dict[str, str], files: kamailio.ProxyFiles) -> None:
        """Redis first (the workers join through it), then the workers and Kamailio side by side."""
        layout.redis_dir.mkdir(parents=True, exist_ok=True)
        self.redis = self._process("redis", self._redis_argv(binaries["redis-server"], layout),
                                   layout.redis_dir / "redis.log", cwd=layout.redis_dir, fatal=True)
        await self.redis.start()
        await self._wait_for("Redis to answer PING", REDIS_TIMEOUT_S, lambda: probes.redis_answers(layout.redis_port))
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.setdefault("CALLBRIDGE_MODEL_DIR", str(layout.data_dir / "models"))  # one speech model for all
        for worker in layout.workers:
            argv = [sys.executable, "-m", "callbridge.app.cli", "serve", "--config", str(worker.config_path),
                    "--log-level", self.options.log_level]
            process = self._process(f"worker {worker.worker_id}", argv, worker.data_dir / "worker.log", env=env)
            self.workers[worker.worker_id] = process
            await process.start()
        self.kamailio = self._process("kamailio", kamailio.kamailio_command(binaries["kamailio"], files),
                                      layout.proxy_dir / "kamailio.log", cwd=layout.proxy_dir, fatal=True)
        await self.kamailio.start()

    def _warn_overridden(self) -> None:
        cluster, server = self.config.cluster, self.config.server
        if cluster.redis_url or cluster.worker_id or cluster.api_url or cluster.sip_uri:
            log.warning("callbridge cluster sets each worker's cluster.redis_url, worker_id, api_url and sip_uri; "
                        "the config's are not used")
        if server.sips_port is not None:
            log.warning("callbridge cluster proxies SIP over UDP and TCP only: server.sips_port is not used")

    def _process(self, name: str, argv: list[str], log_path: Path, *, cwd: Path | None = None,
                 env: dict[str, str] | None = None, fatal: bool = False) -> ManagedProcess:
        # The proxy and Redis are stopped as whole groups; a worker gets its drain signal alone.
        process = ManagedProcess(name, argv, log_path, cwd=cwd, env=env, group=fatal)
        process.on_exit = self._on_fatal_exit if fatal else self._on_worker_exit
        return process

    def _on_worker_exit(self, process: ManagedProcess) -> None:
        # Not hidden: the proxy's probes route around it, but the operator must know.
        returncode = process.returncode or 0
        extra = {"worker": process.name.removeprefix("worker "), "pid": process.pid, "returncode": returncode,
                 "log": str(process.log_path)}
        if returncode == 0:  # drained (POST /api/drain, or a signal from someone else) and done
            log.warning("%s (pid %d) exited: %s; Kamailio sends it no more calls", process.name, process.pid,
                        describe_exit(returncode), extra=extra)
            return
        log.error("%s (pid %d) exited unexpectedly: %s; its log ends:\n%s", process.name, process.pid,
                  describe_exit(returncode), process.log_tail(), extra=extra)

    def _on_fatal_exit(self, process: ManagedProcess) -> None:
        self.failure = (f"{process.name} (pid {process.pid}) exited unexpectedly: "
                        f"{describe_exit(process.returncode or 0)}; its log {process.log_path} ends:\n"
                        f"{process.log_tail()}")
        log.error("%s", self.failure)
        self.failed.set()

    async def _wait_for(self, what: str, timeout: float, ready: Callable[[], Awaitable[bool]]) -> None:
        """Until ``ready()``; StartError when a child exits first or the time is up."""
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            for process in self._children():
                if process.returncode is not None:
                    raise StartError(f"{process.name} exited during start-up ({describe_exit(process.returncode)}) "
                                     f"while waiting for {what}; its log {process.log_path} ends:\n"
                                     f"{process.log_tail()}")
            if await ready():
                return
            if time.monotonic() >= deadline:
                raise StartError(f"timed out after {timeout:.0f} s waiting for {what}")
            await asyncio.sleep(READY_POLL_S)

    async def _all_up(self, kamcmd: str, files: kamailio.ProxyFiles, layout: workerconf.Layout) -> bool:
        try:
            states = await probes.dispatcher_states(kamcmd, files)
        except StartError:
            return False  # the ctl socket is not there yet
        return all(kamailio.is_up(states.get(w.sip_uri, "")) for w in layout.workers)

    def _children(self) -> list[ManagedProcess]:
        return [p for p in (self.redis, *self.workers.values(), self.kamailio) if p is not None]

    def _api_token(self, data_dir: Path) -> tuple[str, str]:
        if self.config.api.token:
            return self.config.api.token, f"api.token in {self.config.source or 'the config'}"
        token = load_or_create_token(data_dir)  # announces a new one with its path
        return token.value, str(token.path)

    def _secret_key_file(self, data_dir: Path) -> Path | None:
        """One key for trunk passwords at rest, so any worker reads what another stored."""
        if os.environ.get(KEY_ENV) or self.config.security.secret_key_file is not None:
            return None
        load_key(data_dir)  # creates <data_dir>/secret.key once
        from ..secretbox import KEY_FILE_NAME

        return data_dir.resolve() / KEY_FILE_NAME

    async def _migrate(self, url: str, data_dir: Path) -> None:
        """The schema, once, before the workers start: N processes must not race to create it."""
        from ..store import CallStore

        def migrate() -> None:
            CallStore.open(url, data_dir).close()

        try:
            await asyncio.to_thread(migrate)
        except Exception as exc:  # noqa: BLE001 - any driver error means the shared database cannot be used
            raise StartError(f"cannot open the database {url.split('@')[-1]}: {exc}") from None

    def _proxy_settings(self, layout: workerconf.Layout) -> kamailio.ProxySettings:
        cidrs = tuple(cidr for trunk in self.config.inbound_trunks for cidr in trunk.allowed_cidrs)
        cluster = self.config.cluster
        return kamailio.ProxySettings(
            host=layout.host, sip_port=layout.sip_port,
            workers=tuple(kamailio.Worker(w.worker_id, w.host, w.sip_port) for w in layout.workers),
            runtime_dir=layout.proxy_dir, source_header=self.config.server.source_header, exempt_cidrs=cidrs,
            flood_requests=cluster.flood_requests, flood_window_s=cluster.flood_window_s)

    @staticmethod
    def _redis_argv(binary: str, layout: workerconf.Layout) -> list[str]:
        # Live state only: no snapshots, no append-only file; loopback only, in the foreground.
        return [binary, "--port", str(layout.redis_port), "--bind", "127.0.0.1", "--protected-mode", "yes",
                "--dir", str(layout.redis_dir), "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--logfile", ""]

    def hurry(self) -> None:
        """A second Ctrl-C: the workers end their calls now (a second SIGTERM makes them send BYE)."""
        for process in self.workers.values():
            process.send(signal.SIGTERM)

    async def stop(self) -> bool:
        """Drain every worker, then stop Kamailio and Redis. True when every worker exited 0."""
        deadline = self.config.server.drain_deadline_s + DRAIN_GRACE_S
        results = await asyncio.gather(*(p.stop(signal.SIGTERM, deadline) for p in self.workers.values()))
        clean = True
        for process, returncode in zip(self.workers.values(), results, strict=True):
            if returncode not in (0, None):
                clean = False
                log.error("%s ended with %s; its log: %s", process.name, describe_exit(returncode),
                          process.log_path)
        for helper in (self.kamailio, self.redis):
            if helper is not None:
                await helper.stop()
        (self.options.data_dir.resolve() / STATE_FILE).unlink(missing_ok=True)  # it exists while the cluster runs
        return clean


@asynccontextmanager
async def running_cluster(config: Config, *, workers: int | None = None, host: str | None = None,
                          sip_port: int = DEFAULT_SIP_PORT, http_port: int = DEFAULT_HTTP_PORT,
                          data_dir: Path | None = None, log_level: str = "info",
                          startup_timeout_s: float = STARTUP_TIMEOUT_S) -> AsyncIterator[Cluster]:
    """A whole cluster for the duration of the block; on leaving it every worker drains, then the rest stop.

    ``workers`` defaults to cluster.workers, ``host`` and ``data_dir`` to the server section's. Raises
    :class:`StartError` (after stopping whatever had started) when the cluster cannot start.
    """
    options = Options(workers=workers or config.cluster.workers, host=host or config.server.host,
                      sip_port=sip_port, http_port=http_port, data_dir=data_dir or config.server.data_dir,
                      log_level=log_level, startup_timeout_s=startup_timeout_s)
    launcher = Launcher(config, options)
    try:
        yield await launcher.start()
    finally:
        await launcher.stop()
