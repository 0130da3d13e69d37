"""The ``cluster:`` section: how a worker joins a cluster, and how ``callbridge cluster`` lays one out."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ClusterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # A worker joins a cluster when redis_url is set; without it callbridge is one process, as before.
    redis_url: str | None = Field(None, description="redis://host:port/db of the cluster's shared state")
    worker_id: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
                                  description="this worker's name in the cluster; defaults to host-pid")
    api_url: str | None = Field(None, description="where other workers reach this worker's HTTP API; "
                                                  "defaults to http://server.host:http_port")
    sip_uri: str | None = Field(None, description="where the proxy reaches this worker; "
                                                  "defaults to sip:server.host:sip_port")
    heartbeat_s: float = Field(1.0, gt=0, le=30, description="how often a worker refreshes its registry entry")
    worker_timeout_s: float = Field(5.0, gt=0, le=300,
                                    description="a worker silent this long is dead: its calls end as worker_lost")
    # callbridge cluster only: the one-machine layout.
    workers: int = Field(2, ge=1, le=64, description="callbridge cluster: how many workers to start")
    rtp_ports_per_worker: int = Field(4000, ge=100, le=30000,
                                      description="callbridge cluster: each worker's own slice of the RTP range")
    flood_requests: int = Field(100, ge=1, description="proxy flood limit: requests per flood_window_s per source "
                                                       "address (Kamailio pike); trunk addresses are exempt")
    flood_window_s: int = Field(2, ge=1, le=60)
    redis_port: int | None = Field(None, ge=1, le=65535,
                                   description="callbridge cluster: the port of the Redis it starts (on loopback); "
                                               "default: the HTTP port after the last worker's")
