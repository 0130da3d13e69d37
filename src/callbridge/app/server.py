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
from typing import TYPE_CHECKING

import uvicorn

from ..call import events as ev
from ..call.events import EndReason
from ..call.manager import CallManager, MediaPolicy
from ..call.media_watchdog import MediaWatchdog, check_interval
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
from ..offload import run_files, run_speech, run_store
from ..offload import shutdown as shutdown_offload
from .gctuning import collect_periodically, tune_gc_for_media
from .http import build_http_app
from .http_context import ApiContext
from .httpconn import ConnectionCounter, ConnectionLimits, guarded_protocol
from .registrations import RegistrationManager, start_registrations
from ..agent.callport import CallPort
from .agents import agent_desk
from ..agent.holding import holding_agent
from ..ivr.nodes import AgentNode
from .auth import ApiToken, load_or_create_token
from .banner import print_banner
from .bind_errors import http_listener, sip_listeners, which_in_use
from .availability import WorkerAvailability
from .drain import Drain
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
from .trunk_route import next_hop, trunk_credentials
from .webrtc_api import softphone_calls

if TYPE_CHECKING:
    from ..speech.stt import Transcriber
    from .cluster.node import ClusterNode
    from .store import AsyncCallStore
    from .webhooks import WebhookOutbox

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
        server = config.server
        # Whether new calls are taken (starting, draining, full): INVITE, OPTIONS and /healthz ask it.
        self.availability = WorkerAvailability(server.max_calls, lambda: len(self.calls.active_calls))
        self.advertised_host = server.public_host or server.host
        self.ua = UserAgent(UserAgentConfig(host=self.advertised_host, user_agent=server.user_agent,
                                            auth_guard=guard_policy(config.security),
                                            new_requests_per_source=server.new_requests_per_source,
                                            new_requests_burst=server.new_requests_burst,
                                            trusted_proxies=tuple(server.trusted_proxies),
                                            source_header=server.source_header, availability=self.availability))
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
        self._transcriber: Transcriber | None = None
        server.data_dir.mkdir(parents=True, exist_ok=True)
        # The demo's orders database and operator only where the config uses them (app/demo.py).
        self.agents = agent_desk(config, data_dir=server.data_dir.resolve(), transcriber=self._get_transcriber)
        # Inbound handoffs reach only "auto" agents; "explicit" ones answer POST /api/dispatch alone.
        self.explicit_agents = {a.name for a in config.agents if a.dispatch == "explicit"}
        app = PhoneLineApp(self.flows, self.prompts, transcriber=self._get_transcriber, dialer=self._dial,
                           start_agent=self._inbound_agent)
        self.calls = CallManager(self.endpoint, media_host=self.advertised_host, ports=self.ports, pacer=self.pacer,
                                 trunks=trunks, media=policy, app=app, ring_seconds=server.ring_seconds)
        self.calls.inbound.availability = self.availability
        self._drain = Drain(self.availability, self.calls, server.drain_deadline_s)
        self.calls.consumers.append(self._drain)
        self.calls.outbound.trunk_srtp = lambda name: (t.srtp if (t := self.trunk_directory.outbound(name)) else None)
        self.bus = EventBus()
        self.metrics = CallMetrics(lambda: len(self.calls.active_calls), lambda: self.ports.in_use)
        self.metrics.watch_auth_guard(self.ua.guard, self.endpoint.now)
        self.metrics.extra.append(install_dial_policy(config, self.calls, lambda: self.trunk_directory.outbound_trunks,
                                                      self.endpoint.now))
        self.store: AsyncCallStore | None = None  # once started
        self.outbox: WebhookOutbox | None = None  # when webhooks.url is set
        self._outbox_task: asyncio.Task | None = None
        self.journal = CallJournal(self.bus, forget=self.calls.forget,
                                   webhook_url=config.webhooks.url, webhook_events=tuple(config.webhooks.events))
        # Every call's events: persisted and published (SSE, webhooks) by the journal, counted by metrics.
        self.calls.consumers += [self.journal, self.metrics]
        self.dispatcher = OutboundRunner(self.calls, start_agent=self.agents, prompts=self.prompts,
                                         transcriber=self._get_transcriber, dial=self._dial)
        # Always a token, loopback included: any web page the user opens can reach 127.0.0.1.
        self.token = (ApiToken(config.api.token, None) if config.api.token
                      else load_or_create_token(server.data_dir))
        self.api_token = self.token.value
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
        self._media_watch_task: asyncio.Task | None = None
        self.registrations: RegistrationManager | None = None
        # One of several workers sharing live state in Redis (app/cluster/): registry, call owners, merged
        # events, the API forwarding to a call's worker. Without cluster.redis_url: none of it.
        self.calls.worker_id = config.cluster.worker_id
        # Browser calls (call/webrtc/): through the same manager, media and router as SIP; None when off.
        self.webrtc = softphone_calls(config, self.calls, lambda: self.router)
        self.cluster: ClusterNode | None = None
        if config.cluster.redis_url:
            from .cluster.node import ClusterNode

            self.cluster = ClusterNode(config, calls=self.calls, bus=self.bus, draining=lambda: self.draining)

    @property
    def ready(self) -> bool:
        """SIP listens and media is ready (new calls may still be refused: full, draining)."""
        return self.availability.ready

    @ready.setter
    def ready(self, value: bool) -> None:
        self.availability.ready = value

    @property
    def draining(self) -> bool:
        return self._drain.draining

    def drain(self, why: str = "api") -> None:
        """Take no new calls; the process exits once the live ones have ended (app/drain.py)."""
        self._drain.begin(why)

    def on_stop_signal(self) -> None:
        """SIGTERM/SIGINT: the first drains, a second ends the calls still up."""
        self._drain.on_signal()

    async def drained(self) -> None:
        """Returns once a drain has begun and no call is left."""
        await self._drain.wait()

    async def _inbound_agent(self, name: str, call: CallPort) -> None:
        if name in self.explicit_agents:
            # Config validation cannot see flows; the handoff is where the rule holds.
            log.warning("flow handed off to explicit-dispatch agent %s; the holding agent answers", name)
            call.note("agent_refused", agent=name, reason="dispatch: explicit")
            await holding_agent(name, call)
            return
        await self.agents(name, call)

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
        hop = next_hop(trunk)
        return await self.calls.dial(f"sip:{user}@{trunk.host}:{trunk.port}",
                                     from_user=trunk.caller_id or (trunk.numbers[0] if trunk.numbers else None),
                                     credentials=trunk_credentials(trunk),
                                     headers=hop.route + list(trunk.headers.items()), destination=hop.destination,
                                     trunk=trunk.name)

    def api_context(self) -> ApiContext:
        """The parts of the service the HTTP API uses; built once the store is open."""
        return ApiContext(
            config=self.config, api_token=self.api_token, ready=lambda: self.ready, calls=self.calls,
            store=self.store, bus=self.bus, journal_backlog=lambda: self.journal.backlog, metrics=self.metrics,
            pacer=self.pacer, ports=self.ports, dispatcher=self.dispatcher, trunk_directory=self.trunk_directory,
            registrations=lambda: self.registrations, auth_guard=lambda: self.ua.guard, now=self.endpoint.now,
            availability=self.availability, drain=self.drain, cluster=self.cluster,
            console=self.console_sources(), webrtc=self.webrtc)

    def console_sources(self):
        """What the console shows beyond call records (app/console/sources.py): flows, drafts, agents."""
        from .console.sources import ConsoleSources

        return ConsoleSources(self.config, self.flows, lambda: self.router.reachable_flows)

    async def _open_store(self) -> AsyncCallStore:
        """Durable call records, and the webhook outbox that lives in the same database."""
        from .store import AsyncCallStore, CallStore

        data_dir = self.config.server.data_dir.resolve()
        store = await run_store(CallStore.open, self.config.database.url, data_dir)
        self.store = AsyncCallStore(store)
        self.journal.store = self.store
        hooks = self.config.webhooks
        if hooks.url:
            from .webhooks import WebhookOutbox

            self.outbox = WebhookOutbox(self.store, secret=hooks.secret)
            self.journal.webhooks = self.outbox
            self._outbox_task = asyncio.get_running_loop().create_task(self.outbox.run(), name="webhooks")
        return self.store

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
            for path in await run_files(scan_and_repair, self.recordings_dir):
                log.warning("repaired recording after an unclean shutdown", extra={"path": str(path)})
        store = await self._open_store()
        await self.trunk_directory.load(store)
        self.journal.start()
        if self.cluster is not None:
            await self.cluster.start(store, outbox=self.outbox)  # before SIP listens: every call is owned
        self._warn_explicit_handoffs()
        await self.calls.media.preload_hold_music()  # decoded in the files pool, not on the first hold
        if self.config.prompts.prerender:
            # Before SIP listens: the first caller must not wait for synthesis.
            await self._render_prompts()
        reachable = [self.flows[name] for name in self.router.reachable_flows if name in self.flows]
        if any(hands_off(flow) for flow in reachable):
            # The agent's models (intents, voice, recogniser): the first handoff must not wait for them.
            started = time.monotonic()
            await run_speech(self.agents.preload)
            log.info("agent models ready", extra={"seconds": round(time.monotonic() - started, 2)})
        elif any(listens_for_speech(flow) for flow in reachable):
            # Likewise the speech model (~0.3 s, more the first time it is assembled).
            await run_speech(self._get_transcriber().load)
            log.info("speech recognition ready")
        ssl_context = None
        if server.tls is not None:
            ssl_context = server_context(str(server.tls.cert), str(server.tls.key))
        try:
            await self.endpoint.start(server.host, udp_port=server.sip_port, tcp_port=server.sip_port,
                                      tls_port=server.sips_port if ssl_context else None, ssl_context=ssl_context)
        except OSError as exc:  # "address already in use": say which port, and what for (app/bind_errors.py)
            in_use = which_in_use(exc, server.host, sip_listeners(server.sip_port,
                                                                  server.sips_port if ssl_context else None))
            if in_use is None:
                raise
            raise in_use from None
        # API outbound trunks with register: too (those added later register at the next start).
        self.registrations = start_registrations(self.trunk_directory.config_view(), self.endpoint)
        transports = self.endpoint.transports
        # Our h11 protocol with per-client and header-time limits (httpconn.py); no WebSocket upgrades.
        http_config = uvicorn.Config(build_http_app(self.api_context()), host=server.host, port=server.http_port,
                                     log_config=None, access_log=False, lifespan="off", ws="none",
                                     http=guarded_protocol(self.http_connections))
        self._http = uvicorn.Server(http_config)
        self._http_task = asyncio.get_running_loop().create_task(self._serve_http(self._http), name="http")
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
        if self.config.media.media_timeout_s is not None:
            self._media_watch_task = asyncio.get_running_loop().create_task(
                self._end_silent_calls(MediaWatchdog(self.config.media.media_timeout_s)), name="media-watchdog")
        self.ready = True
        log.info("ready", extra={"sip_udp": self.bound.sip_udp, "sip_tcp": self.bound.sip_tcp,
                                 "sip_tls": self.bound.sip_tls, "http": http_port})
        return self.bound

    async def _serve_http(self, http: uvicorn.Server) -> None:
        try:
            await http.serve()
        except SystemExit as exc:  # uvicorn exits the process when it cannot bind: make it an OSError we name
            host, port = self.config.server.host, self.config.server.http_port
            raise which_in_use(exc, host, [http_listener(port)]) or OSError(
                f"HTTP server failed to start on port {port}") from None

    async def _clean_recordings(self) -> None:
        """Recordings past media.recordings_retention_days or over media.recordings_max_bytes go,
        oldest first; a call's recording is never deleted while it is being written."""
        assert self.recordings_dir is not None
        media = self.config.media
        policy = RetentionPolicy(media.recordings_retention_days, media.recordings_max_bytes)
        while True:
            in_use = {Path(c.recording).name for c in self.calls.active_calls if c.recording}
            try:
                await run_files(clean_recordings, self.recordings_dir, time.time(), policy, in_use)
            except OSError as exc:
                log.warning("recordings cleanup failed: %s", exc)
            await asyncio.sleep(CLEANUP_INTERVAL_S)

    async def _end_silent_calls(self, watchdog: MediaWatchdog) -> None:
        """Calls whose far end stopped sending RTP end with BYE (call/media_watchdog.py)."""
        while True:
            await asyncio.sleep(check_interval(watchdog.timeout_s))
            for silence in watchdog.silent(self.calls.active_calls, time.monotonic()):
                call = silence.call
                log.info("no RTP from the far end; ending the call", extra={
                    "call_id": call.id, "silent_s": round(silence.seconds, 1)})
                try:
                    call.publish(ev.MediaTimedOut(silent_s=round(silence.seconds, 1)))
                    self.calls.hangup(call, EndReason.MEDIA_TIMEOUT)
                except Exception:  # noqa: BLE001 - one call's failure must not stop the watch over the rest
                    log.exception("could not end silent call %s", call.id)

    async def stop(self) -> None:
        self.ready = False
        for task in (self._gc_task, self._retention_task, self._media_watch_task):
            if task is not None:
                task.cancel()
        self.bus.close()  # event streams end, so the HTTP server can stop
        if self.registrations is not None:
            await self.registrations.close()  # RFC 3261 §10.2.2: remove our bindings
        await self.calls.close()
        if self.webrtc is not None:
            await self.webrtc.close()  # the calls ended above; their peer connections finish closing
        await self.journal.close()  # every event and final record written
        if self.cluster is not None:
            await self.cluster.stop()  # the calls' last events relayed, then we leave the registry
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
            await run_files(self.recording_io.close)
        await self.endpoint.close()
        if self._http is not None:
            self._http.should_exit = True
            if self._http_task is not None:
                await self._http_task
        shutdown_offload()  # jobs still queued finish; the process exits once they have


async def serve(config: Config) -> None:
    server = Server(config)
    bound = await server.start()
    # The console link and two ways to call (app/banner.py); the token only to a terminal.
    print_banner(config, sip_port=bound.sip_udp, sip_tls_port=bound.sip_tls, http_port=bound.http, token=server.token)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.on_stop_signal)  # drain first; a second signal cuts it short
    await server.drained()  # also after POST /api/drain
    log.info("shutting down")
    await server.stop()
