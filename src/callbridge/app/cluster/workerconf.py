"""`callbridge cluster`'s layout on one machine, and each worker's config file derived from the base config.

Every worker gets the base config with only what must differ changed: its SIP and HTTP ports, its
slice of the RTP range, its data dir, its cluster identity; and what must be shared set once for
all: the database, the API token, the key for secrets at rest, Redis, and the proxy it trusts.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..config import Config
from .kamailio import host_port

WORKERS_DIR = "workers"
WORKER_CONFIG_NAME = "callbridge.yaml"
SHARED_SQLITE_NAME = "callbridge.db"
CONFIG_FILE_MODE = 0o600  # it holds the API token and any trunk passwords


class LayoutError(ValueError):
    """The ports or ranges asked for do not fit."""


@dataclass(frozen=True)
class WorkerPlan:
    worker_id: str
    host: str
    sip_port: int
    http_port: int
    rtp_port_min: int
    rtp_port_max: int
    data_dir: Path

    @property
    def config_path(self) -> Path:
        return self.data_dir / WORKER_CONFIG_NAME

    @property
    def api_url(self) -> str:
        return f"http://{host_port(self.host, self.http_port)}"

    @property
    def sip_uri(self) -> str:
        return f"sip:{host_port(self.host, self.sip_port)}"


@dataclass(frozen=True)
class Layout:
    host: str  # Kamailio's and the workers' address
    sip_port: int  # Kamailio's
    redis_port: int  # on loopback
    data_dir: Path
    workers: tuple[WorkerPlan, ...]

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def proxy_dir(self) -> Path:
        return self.data_dir / "kamailio"

    @property
    def redis_dir(self) -> Path:
        return self.data_dir / "redis"

    @property
    def proxy_network(self) -> str:
        """The one address workers trust a source header from: Kamailio's."""
        return str(ipaddress.ip_network(self.host))

    def tcp_ports(self) -> list[tuple[int, str]]:
        """Every TCP port the cluster listens on, with what listens there."""
        ports = [(self.sip_port, "Kamailio SIP (TCP)"), (self.redis_port, "Redis")]
        for worker in self.workers:
            ports += [(worker.sip_port, f"worker {worker.worker_id} SIP (TCP)"),
                      (worker.http_port, f"worker {worker.worker_id} HTTP API")]
        return ports

    def udp_ports(self) -> list[tuple[int, str]]:
        ports = [(self.sip_port, "Kamailio SIP (UDP)")]
        return ports + [(w.sip_port, f"worker {w.worker_id} SIP (UDP)") for w in self.workers]


def plan(config: Config, *, workers: int, host: str, sip_port: int, http_port: int, data_dir: Path) -> Layout:
    """Kamailio on sip_port, worker i (1-based) on SIP sip_port+i and HTTP http_port+i-1, RTP slices
    of cluster.rtp_ports_per_worker from media.rtp_port_min, Redis on cluster.redis_port or after the APIs."""
    if not 1 <= workers <= 64:
        raise LayoutError(f"--workers {workers}: between 1 and 64")
    for port, what in ((sip_port, "--sip-port"), (http_port, "--http-port")):
        if not 1 <= port <= 65535:
            raise LayoutError(f"{what} {port}: a port from 1 to 65535 (the cluster needs fixed ports, not 0)")
    if sip_port + workers > 65535 or http_port + workers > 65535:
        raise LayoutError(f"{workers} workers need ports {sip_port}-{sip_port + workers} and "
                          f"{http_port}-{http_port + workers - 1}; they run past 65535")
    media, cluster = config.media, config.cluster
    per_worker = cluster.rtp_ports_per_worker
    available = media.rtp_port_max - media.rtp_port_min + 1
    if workers * per_worker > available:
        raise LayoutError(f"{workers} workers x cluster.rtp_ports_per_worker {per_worker} = {workers * per_worker} "
                          f"RTP ports, but media.rtp_port_min..rtp_port_max ({media.rtp_port_min}-"
                          f"{media.rtp_port_max}) holds {available}: lower cluster.rtp_ports_per_worker or widen "
                          "the range")
    data_dir = data_dir.resolve()
    plans = []
    for index in range(workers):
        worker_id = f"w{index + 1}"
        low = media.rtp_port_min + index * per_worker
        plans.append(WorkerPlan(worker_id, host, sip_port + index + 1, http_port + index, low,
                                low + per_worker - 1, data_dir / WORKERS_DIR / worker_id))
    layout = Layout(host, sip_port, cluster.redis_port or http_port + workers, data_dir, tuple(plans))
    for ports in (layout.tcp_ports(), layout.udp_ports()):
        seen: dict[int, str] = {}
        for port, what in ports:
            if port in seen:
                raise LayoutError(f"port {port} would be both {seen[port]} and {what}: choose other ports")
            seen[port] = what
    return layout


@dataclass(frozen=True)
class Shared:
    """What every worker's config has the same: set once by the launcher."""

    api_token: str
    database_url: str
    secret_key_file: Path | None  # None: $CALLBRIDGE_SECRET_KEY or the base config's own setting decides


def shared_database_url(config: Config, data_dir: Path) -> str:
    """database.url as configured, else one SQLite file for every worker (WAL mode with a busy
    timeout makes concurrent writers from several processes safe; PostgreSQL is for production)."""
    if config.database.url:
        return config.database.url
    return f"sqlite:///{(data_dir / SHARED_SQLITE_NAME).resolve()}"


def worker_config(base: Config, layout: Layout, worker: WorkerPlan, shared: Shared) -> dict[str, Any]:
    """The base config as a YAML-ready dict, with the worker's own and the shared settings."""
    document = base.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude={"source"})
    # Flow files and intents are resolved against the config file's folder; the worker's file lives
    # elsewhere, so they become absolute. Other relative paths are the working dir's, which is kept.
    if base.flows:
        document["flows"] = {name: str(base.base_dir / path) for name, path in base.flows.items()}
    for agent, dumped in zip(base.agents, document.get("agents", []), strict=False):
        if agent.intents is not None and "intents" in dumped:
            dumped["intents"] = str(base.base_dir / agent.intents)
    server = document.setdefault("server", {})
    server.pop("sips_port", None)  # the proxy carries UDP and TCP; N workers cannot share one TLS port
    server.update(host=worker.host, sip_port=worker.sip_port, http_port=worker.http_port,
                  data_dir=str(worker.data_dir), trusted_proxies=[layout.proxy_network])
    document.setdefault("media", {}).update(rtp_port_min=worker.rtp_port_min, rtp_port_max=worker.rtp_port_max)
    document.setdefault("api", {})["token"] = shared.api_token
    document.setdefault("database", {})["url"] = shared.database_url
    if shared.secret_key_file is not None:
        document.setdefault("security", {})["secret_key_file"] = str(shared.secret_key_file)
    document.setdefault("cluster", {}).update(redis_url=layout.redis_url, worker_id=worker.worker_id,
                                              api_url=worker.api_url, sip_uri=worker.sip_uri)
    return document


def write_worker_config(base: Config, layout: Layout, worker: WorkerPlan, shared: Shared) -> Path:
    worker.data_dir.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(worker_config(base, layout, worker, shared), sort_keys=False)
    path = worker.config_path
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, CONFIG_FILE_MODE)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)
    os.chmod(path, CONFIG_FILE_MODE)
    return path
