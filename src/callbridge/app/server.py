"""Assembles the service: SIP endpoint, media, call manager and HTTP, in one event loop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path
from dataclasses import dataclass

import uvicorn

from ..call.manager import CallManager, MediaPolicy
from ..media.diskwriter import BackgroundFileWriter
from ..media.pacer import MediaPacer
from ..media.retention import CLEANUP_INTERVAL_S, RetentionPolicy, clean_recordings
from ..media.wavfile import scan_and_repair
from ..rtp.ports import PortAllocator
from ..sip.endpoint import SipEndpoint
from ..sip.tls import server_context
from ..sip.useragent import UserAgent, UserAgentConfig
from .config import Config, InboundTrunk
from ..speech.prompts import PromptCache
from .gctuning import collect_periodically, tune_gc_for_media
from .http import build_http_app
from .httpconn import ConnectionCounter, ConnectionLimits, guarded_protocol
from .registrations import RegistrationManager, start_registrations
from ..agent.demo_orders import OrdersDb
from ..agent.desk import AgentDesk
from .agents import agent_definitions
from ..agent.holding import holding_agent
from ..ivr.handoff import HandoffContext
from ..ivr.nodes import AgentNode
from ..sip.address import Address
from .auth import ApiToken, load_or_create_token
from .dispatch import OutboundRunner
from .events import EventBus
from .journal import CallJournal
from .dial_rules import install_dial_policy
from .metrics import CallMetrics
from .phoneline import PhoneLineApp, hands_off, listens_for_speech, load_flows, static_prompts
from .routing import Router
from .security_api import guard_policy
from .secretbox import SecretBox, load_key
from .trunk_directory import TrunkDirectory

log = logging.getLogger("callbridge.server")


class ModelProgress:
    """Shows the speech model being assembled (~140 MB, once per data dir):
    a bar on a terminal, a log line every 10% otherwise."""

    def __init__(self) -> None:
        self._logged = -1
        self._tty = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        percent = done * 100 // max(total, 1)
        if self._tty:
            filled = percent * 30 // 100
            end = "\n" if done >= total else ""
            print(f"\rassembling speech model [{'#' * filled}{' ' * (30 - filled)}] {percent:3d}%", end=end,
                  file=sys.stderr, flush=True)
        if percent // 10 > self._logged:
            self._logged = percent // 10
            log.info("assembling speech model", extra={"percent": percent, "mb": round(done / 1e6)})


def default_cache_dir() -> Path:
    # Rendered prompts outlive any one data dir: share them like any XDG cache.
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "callbridge"

def set_priority(nice: int) -> None:
    """Like PBXes' realtime-priority option: a media process that loses the CPU for
    even 30 ms is heard on every call, so let it be scheduled first."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError as exc:
        log.warning("cannot set process priority", extra={"nice": nice, "error": str(exc)})
    else:
        log.info("process priority set", extra={"nice": nice})


@dataclass
class BoundPorts:
    sip_udp: int
    sip_tcp: int
    sip_tls: int | None
    http: int


class Server:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.ready = False
        server = config.server
        self.advertised_host = server.public_host or server.host
        self.ua = UserAgent(UserAgentConfig(host=self.advertised_host, user_agent=server.user_agent,
                                            auth_guard=guard_policy(config.security),
                                            new_requests_per_source=server.new_requests_per_source,
                                            new_requests_burst=server.new_requests_burst))
        self.endpoint = SipEndpoint(self.ua, self._on_sip_event)
        self.pacer = MediaPacer()
        self.ports = PortAllocator(config.media.rtp_port_min, config.media.rtp_port_max)
        # Config trunks now, API trunks from the store at start; it keeps the manager's table current.
        self.trunk_directory = TrunkDirectory(
            config, secrets=SecretBox(load_key(server.data_dir.resolve(), config.security.secret_key_file)))
        trunks = self.trunk_directory.table
        media = config.media
        self.recordings_dir = server.data_dir.resolve() / "recordings" if media.record else None
        self.recording_io = BackgroundFileWriter() if media.record else None
        policy = MediaPolicy(codecs=media.codecs, dtmf_inband=media.dtmf_inband,
                             recordings_dir=self.recordings_dir, recording_io=self.recording_io,
                             music_on_hold=media.music_on_hold, srtp=media.srtp)
        self.flows = load_flows(config)
        self.prompts = PromptCache(config.prompts.cache_dir or default_cache_dir() / "prompts")
        self._transcriber = None
        server.data_dir.mkdir(parents=True, exist_ok=True)
        self.agents = AgentDesk(
            agent_definitions(config),
            transcriber=self._get_transcriber, operator_uri=config.demo.operator_uri,
            orders_db=OrdersDb(server.data_dir.resolve() / "demo_orders.sqlite"))
        # Inbound handoffs reach only "auto" agents; "explicit" ones answer POST /api/dispatch alone.
        self.explicit_agents = {a.name for a in config.agents if a.dispatch == "explicit"}
        app = PhoneLineApp(self.flows, self.prompts, transcriber=self._get_transcriber, dialer=self._dial,
                           start_agent=self._inbound_agent)
        self.calls = CallManager(self.endpoint, media_host=self.advertised_host, ports=self.ports, pacer=self.pacer,
                                 trunks=trunks, media=policy, app=app, ring_seconds=server.ring_seconds)
        self.calls.max_calls = server.max_calls
        self.calls.outbound_srtp = lambda name: (t.srtp if (t := self.trunk_directory.outbound(name)) else None)
        self.bus = EventBus()
        self.metrics = CallMetrics(lambda: len(self.calls.active_calls), lambda: self.ports.in_use)
        self.metrics.watch_auth_guard(self.ua.guard, self.endpoint.now)
        self.metrics.extra.append(install_dial_policy(config, self.calls, lambda: self.trunk_directory.outbound_trunks,
                                                      self.endpoint.now))
        self.store = None  # an AsyncCallStore once started
        self.outbox = None  # a WebhookOutbox when webhooks.url is set
        self._outbox_task: asyncio.Task | None = None
        self.journal = CallJournal(self.bus, self.metrics, forget=self.calls.forget,
                                   webhook_url=config.webhooks.url, webhook_events=tuple(config.webhooks.events))
        self.calls.observers.append(self.journal.observe)
        self.dispatcher = OutboundRunner(self.calls, start_agent=self.agents, prompts=self.prompts,
                                         transcriber=self._get_transcriber, dial=self._dial)
        # Always a token, loopback included: any web page the user opens can reach 127.0.0.1.
        self.api_token = (ApiToken(config.api.token, None) if config.api.token
                          else load_or_create_token(server.data_dir)).value
        api = config.api
        self.http_connections = ConnectionCounter(ConnectionLimits(
            per_client=api.max_connections_per_client, total=api.max_connections,
            header_timeout_s=api.header_timeout_s))
        self.router = Router(config)
        self.calls.router = lambda call: self.router.flow_for(call.trunk, call.called)
        self.trunk_directory.on_inbound_change = self._reroute
        self._http: uvicorn.Server | None = None
        self._http_task: asyncio.Task | None = None
        self.bound: BoundPorts | None = None
        self._gc_task: asyncio.Task | None = None
        self._retention_task: asyncio.Task | None = None
        self.registrations: RegistrationManager | None = None

    async def _inbound_agent(self, name: str, io, context: HandoffContext) -> None:
        if name in self.explicit_agents:
            # Config validation cannot see flows; the handoff is where the rule holds.
            log.warning("flow handed off to explicit-dispatch agent %s; the holding agent answers", name)
            io.record("agent_refused", agent=name, reason="dispatch: explicit")
            await holding_agent(name, io, context)
            return
        await self.agents(name, io, context)

    def _reroute(self, inbound_trunks: list[InboundTrunk]) -> None:
        # API inbound trunks bring their own flow and routes: new calls route with them.
        self.router = Router(self.config.model_copy(update={"inbound_trunks": inbound_trunks}))

    def _on_sip_event(self, event) -> None:
        self.calls.on_sip_event(event)

    def _get_transcriber(self):
        # Loaded on the first speech input: most lines never need the 140 MB model.
        if self._transcriber is None:
            from ..speech.stt import Transcriber

            self._transcriber = Transcriber(self._model_dir() / "whisper-base", progress=ModelProgress(),
                                            beam_size=1)  # greedy: ~80 ms faster, same words on short answers
        return self._transcriber

    def _model_dir(self) -> Path:
        # Assembled model files live in the data dir, next to what they serve;
        # CALLBRIDGE_MODEL_DIR shares one copy between installs (and test servers).
        from ..speech.whisper_model import MODEL_DIR_ENV

        shared = os.environ.get(MODEL_DIR_ENV)
        return Path(shared) if shared else self.config.server.data_dir.resolve() / "models"

    async def _dial(self, target: str, trunk_name: str | None):
        """An outbound leg, through a named trunk when given (numbers need one)."""
        trunk = self.trunk_directory.outbound(trunk_name)
        if trunk is None:
            return await self.calls.dial(target)
        user = target.removeprefix("sip:").split("@", 1)[0]
        credentials = (trunk.username, trunk.password) if trunk.username and trunk.password else None
        return await self.calls.dial(f"sip:{user}@{trunk.host}:{trunk.port}",
                                     from_user=trunk.caller_id or (trunk.numbers[0] if trunk.numbers else None),
                                     credentials=credentials, headers=list(trunk.headers.items()),
                                     destination=Address(trunk.host, trunk.port, trunk.transport), trunk=trunk.name)

    async def _open_store(self) -> None:
        """Durable call records, and the webhook outbox that lives in the same database."""
        from .store import AsyncCallStore, CallStore

        data_dir = self.config.server.data_dir.resolve()
        store = await asyncio.to_thread(CallStore.open, self.config.database.url, data_dir)
        self.store = AsyncCallStore(store)
        self.journal.store = self.store
        hooks = self.config.webhooks
        if hooks.url:
            from .webhooks import WebhookOutbox

            self.outbox = WebhookOutbox(self.store, secret=hooks.secret)
            self.journal.webhooks = self.outbox
            self._outbox_task = asyncio.get_running_loop().create_task(self.outbox.run(), name="webhooks")

    def _warn_explicit_handoffs(self) -> None:
        for name in self.router.reachable_flows:
            flow = self.flows.get(name)
            for node in flow.nodes.values() if flow else ():
                if isinstance(node, AgentNode) and node.agent in self.explicit_agents:
                    log.warning("flow %s hands off to agent %s, which is dispatch: explicit; callers will get "
                                "the holding agent", name, node.agent)

    async def _render_prompts(self) -> None:
        specs = static_prompts({name: flow for name, flow in self.flows.items() if name in self.router.reachable_flows})
        missing = [spec for spec in specs if not self.prompts.path_for(spec).exists()]
        if not missing:
            log.info("prompts ready", extra={"prompts": len(specs), "rendered": 0})
            return
        log.info("rendering prompts", extra={"total": len(missing)})

        def progress(done: int, total: int, spec) -> None:
            log.info(f"rendering prompts {done}/{total}", extra={"text": spec.text[:60], "language": spec.language})

        await self.prompts.render_all(missing, progress=progress)
        log.info("prompts ready", extra={"prompts": len(specs), "rendered": len(missing)})

    async def start(self) -> BoundPorts:
        server = self.config.server
        if server.nice is not None:
            set_priority(server.nice)
        if self.recordings_dir is not None:
            self.recordings_dir.mkdir(parents=True, exist_ok=True)
            # A crash leaves recordings with stale header sizes: make them playable again.
            for path in scan_and_repair(self.recordings_dir):
                log.warning("repaired recording after an unclean shutdown", extra={"path": str(path)})
        await self._open_store()
        await self.trunk_directory.load(self.store)
        self.journal.start()
        self._warn_explicit_handoffs()
        if self.config.prompts.prerender:
            # Before SIP listens: the first caller must not wait for synthesis.
            await self._render_prompts()
        reachable = [self.flows[name] for name in self.router.reachable_flows if name in self.flows]
        if any(hands_off(flow) for flow in reachable):
            # The agent's models (intents, voice, recogniser): the first handoff must not wait for them.
            started = time.monotonic()
            await asyncio.to_thread(self.agents.preload)
            log.info("agent models ready", extra={"seconds": round(time.monotonic() - started, 2)})
        elif any(listens_for_speech(flow) for flow in reachable):
            # Likewise the speech model (~0.3 s, more the first time it is assembled).
            await asyncio.to_thread(self._get_transcriber().load)
            log.info("speech recognition ready")
        ssl_context = None
        if server.tls is not None:
            ssl_context = server_context(str(server.tls.cert), str(server.tls.key))
        await self.endpoint.start(server.host, udp_port=server.sip_port, tcp_port=server.sip_port,
                                  tls_port=server.sips_port if ssl_context else None, ssl_context=ssl_context)
        # API outbound trunks with register: too (those added later register at the next start).
        self.registrations = start_registrations(self.trunk_directory.config_view(), self.endpoint)
        transports = self.endpoint.transports
        # Our h11 protocol with per-client and header-time limits (httpconn.py); no WebSocket upgrades.
        http_config = uvicorn.Config(build_http_app(self), host=server.host, port=server.http_port,
                                     log_config=None, access_log=False, lifespan="off", ws="none",
                                     http=guarded_protocol(self.http_connections))
        self._http = uvicorn.Server(http_config)
        self._http_task = asyncio.get_running_loop().create_task(self._http.serve(), name="http")
        while not self._http.started:
            if self._http_task.done():
                self._http_task.result()
                raise OSError(f"HTTP server failed to start on port {server.http_port}")
            await asyncio.sleep(0.01)
        http_port = self._http.servers[0].sockets[0].getsockname()[1]
        self.bound = BoundPorts(
            sip_udp=transports.local_address("udp").port,
            sip_tcp=transports.local_address("tcp").port,
            sip_tls=transports.local_address("tls").port if "tls" in transports.transports else None,
            http=http_port,
        )
        tune_gc_for_media()
        self._gc_task = asyncio.get_running_loop().create_task(collect_periodically(), name="gc")
        if self.recordings_dir is not None:
            self._retention_task = asyncio.get_running_loop().create_task(self._clean_recordings(), name="retention")
        self.ready = True
        log.info("ready", extra={"sip_udp": self.bound.sip_udp, "sip_tcp": self.bound.sip_tcp,
                                 "sip_tls": self.bound.sip_tls, "http": http_port})
        return self.bound

    async def _clean_recordings(self) -> None:
        """Recordings past media.recordings_retention_days or over media.recordings_max_bytes go,
        oldest first; a call's recording is never deleted while it is being written."""
        assert self.recordings_dir is not None
        media = self.config.media
        policy = RetentionPolicy(media.recordings_retention_days, media.recordings_max_bytes)
        while True:
            in_use = {Path(c.recording).name for c in self.calls.active_calls if c.recording}
            try:
                await asyncio.to_thread(clean_recordings, self.recordings_dir, time.time(), policy, in_use)
            except OSError as exc:
                log.warning("recordings cleanup failed: %s", exc)
            await asyncio.sleep(CLEANUP_INTERVAL_S)

    async def stop(self) -> None:
        self.ready = False
        for task in (self._gc_task, self._retention_task):
            if task is not None:
                task.cancel()
        self.bus.close()  # event streams end, so the HTTP server can stop
        if self.registrations is not None:
            await self.registrations.close()  # RFC 3261 §10.2.2: remove our bindings
        await self.calls.close()
        await self.journal.close()  # every event and final record written
        if self.outbox is not None:
            await self.outbox.close()
        if self._outbox_task is not None:
            self._outbox_task.cancel()
            await asyncio.gather(self._outbox_task, return_exceptions=True)
        if self.store is not None:
            await self.store.close()
        await self.pacer.close()
        if self.recording_io is not None:
            # Every recording's last chunk and final header reach the disk before we exit.
            await asyncio.to_thread(self.recording_io.close)
        await self.endpoint.close()
        if self._http is not None:
            self._http.should_exit = True
            if self._http_task is not None:
                await self._http_task


async def serve(config: Config) -> None:
    server = Server(config)
    bound = await server.start()
    print(f"callbridge ready: SIP udp/tcp {config.server.host}:{bound.sip_udp}"
          + (f", tls :{bound.sip_tls}" if bound.sip_tls else "")
          + f"; HTTP http://{config.server.host}:{bound.http}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await server.stop()
