"""The service configuration: a YAML file validated with pydantic.

Every error names file:line:column (see :mod:`callbridge.yamlsource`); the
CLI prints it and exits with status 2.

One module although it is over 500 lines: it is the schema of one YAML file, a
class per section in the file's order, so read top to bottom it is the reference
for every key (the ``cluster:`` section lives in app/cluster/config.py).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..sip.headers import COMPACT_FORMS, LIST_HEADERS, canonical_name
from ..yamlsource import Located, Position, SourceError, load_yaml
from .cluster.config import ClusterConfig
from ..sip.address import proxy_address

# SRTP with SDES keys (call/srtp_policy.py): auto = optional over TLS signalling, off over UDP/TCP.
SrtpMode = Literal["required", "optional", "off", "auto"]
SRTP_DESCRIPTION = ("SRTP (SDES, RFC 4568): required | optional | off | auto (optional over TLS, off otherwise); "
                    "keys are only ever exchanged over TLS")


def _srtp_off(value: Any) -> Any:
    """YAML 1.1 reads a bare ``off`` as false: take it as the word it was."""
    return "off" if value is False else value


class _Strict(BaseModel):
    # Unknown keys are typos more often than not: reject them.
    model_config = ConfigDict(extra="forbid")


class TlsConfig(_Strict):
    cert: Path
    key: Path


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    public_host: str | None = Field(None, description="address advertised in Via/Contact/SDP; defaults to host")
    sip_port: int = Field(5060, ge=0, le=65535)
    sips_port: int | None = Field(None, ge=0, le=65535)
    http_port: int = Field(8080, ge=0, le=65535)
    data_dir: Path = Path("data")
    tls: TlsConfig | None = None
    ring_seconds: float = Field(0.0, ge=0, le=120, description="how long inbound calls ring (180) before answer")
    max_calls: int = Field(1000, ge=1, description="concurrent calls; beyond it new INVITEs get 503 + Retry-After")
    new_requests_per_source: float = Field(
        10.0, ge=0, description="dialog-creating requests (INVITE, OPTIONS, REGISTER...) per second per source IP; "
                                "beyond it a few get 503 + Retry-After, the rest are dropped; 0 = no limit")
    new_requests_burst: float = Field(20.0, ge=1, description="how many of those a source may send at once")
    trusted_proxies: list[str] = Field(
        default_factory=list, description="CIDRs of SIP proxies (e.g. Kamailio) whose source header names the "
                                          "caller's real address; from anyone else that header is ignored")
    source_header: str = Field("X-Source-IP", pattern=r"^[A-Za-z0-9-]+$",
                               description="header a trusted proxy puts the caller's address in: "
                                           "'X-Source-IP: 203.0.113.5;port=5060;proto=udp'")
    drain_deadline_s: float = Field(600.0, ge=0, description="a draining worker ends the calls still up "
                                                              "this long after the drain began, then exits")
    nice: int | None = Field(None, ge=-20, le=19,
                             description="process priority; negative runs media ahead of other work "
                                         "(needs root/CAP_SYS_NICE)")
    user_agent: str = Field("callbridge", min_length=1, max_length=100, pattern=r"^[\x21-\x7e][\x20-\x7e]*$",
                            description="product named in SIP User-Agent/Server headers; no version by default, "
                                        "so scanners cannot tell which release runs")

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_cidrs(cls, values: list[str]) -> list[str]:
        # Strict: "10.0.0.5/8" (host bits set) is a typo that would trust a whole /8.
        for value in values:
            try:
                network = ipaddress.ip_network(value)
            except ValueError as exc:
                raise ValueError(f"{exc}: write a network such as 10.0.0.0/24, or one proxy as 10.0.0.5/32") from None
            if network.prefixlen == 0:
                raise ValueError(f"{value!r} trusts every address: anyone could name any caller")
        return values

    @field_validator("source_header")
    @classmethod
    def _own_header(cls, value: str) -> str:
        # The header is removed from every request: it must not be one the SIP core reads.
        known = {name.lower() for name in COMPACT_FORMS.values()} | LIST_HEADERS | {
            "from", "to", "call-id", "cseq", "max-forwards", "content-length", "content-type", "authorization",
            "proxy-authorization", "www-authenticate", "session-expires", "min-se", "rseq", "rack", "event",
            "subscription-state", "refer-to", "referred-by", "retry-after", "expires", "user-agent", "server"}
        if len(value) == 1 or canonical_name(value).lower() in known:
            raise ValueError(f"{value!r} is a SIP header; use a header of the proxy's own, such as X-Source-IP")
        return value

    @model_validator(mode="after")
    def _tls_needs_cert(self) -> "ServerConfig":
        if self.sips_port is not None and self.tls is None:
            raise ValueError("sips_port: needs tls.cert and tls.key")
        return self


class DigestAuthConfig(_Strict):
    username: str = Field(min_length=1)
    password: str = Field(min_length=1)
    realm: str = "callbridge"
    # One challenge per algorithm, in this order. MD5 leads by default because
    # many phones and SIPp answer only the first challenge and know only MD5.
    algorithms: list[str] = Field(default_factory=lambda: ["MD5", "SHA-256"])

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, values: list[str]) -> list[str]:
        known = {"MD5", "SHA-256"}
        upper = [v.upper() for v in values]
        if not upper or any(v not in known for v in upper):
            raise ValueError(f"algorithms must be from {sorted(known)}, got {values}")
        return upper


class InboundTrunk(_Strict):
    name: str = Field(min_length=1)
    numbers: list[str] = Field(default_factory=list, description="called numbers / SIP users; empty = any")
    allowed_cidrs: list[str] = Field(default_factory=list, description="source networks; empty = any")
    auth: DigestAuthConfig | None = None
    flow: str | None = Field(None, description="this trunk's flow when no route matches the called number")
    routes: dict[str, str] = Field(default_factory=dict, description="called number / DID / SIP user -> flow")
    transfer_targets: list[str] = Field(
        default_factory=list, description="where a caller's REFER may transfer to: number globs (+1555*) or URI "
                                          "globs (sip:*@pbx.example:*); empty = REFER refused with 403")
    srtp: SrtpMode | None = Field(None, description=SRTP_DESCRIPTION + "; default: media.srtp")
    _srtp_yaml_off = field_validator("srtp", mode="before")(_srtp_off)

    @field_validator("allowed_cidrs")
    @classmethod
    def _cidrs(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise ValueError(f"{value!r} is not an IP network (e.g. 54.172.60.0/30)") from None
        return values


class MediaConfig(_Strict):
    rtp_port_min: int = Field(10000, ge=1024, le=65534)
    rtp_port_max: int = Field(20000, ge=1025, le=65535)
    codecs: list[str] = Field(default_factory=lambda: ["PCMU", "PCMA", "G722"])
    dtmf_inband: Literal["auto", "always", "never"] = Field(
        "auto", description="tone detection: auto = only when telephone-event was not negotiated")
    record: bool = Field(True, description="stereo WAV per call under <data_dir>/recordings")
    music_on_hold: Path | None = Field(None, description="WAV file looped while a caller is on hold")
    recordings_retention_days: float | None = Field(
        30.0, gt=0, description="recordings older than this are deleted (checked hourly); null = kept forever")
    srtp: SrtpMode = Field("auto", description=SRTP_DESCRIPTION + "; for calls matching no trunk and trunks "
                                                                  "that do not set their own")
    _srtp_yaml_off = field_validator("srtp", mode="before")(_srtp_off)
    recordings_max_bytes: int | None = Field(
        10 * 1024**3, gt=0, description="recordings beyond this total are deleted, oldest first; null = no quota")
    media_timeout_s: float | None = Field(
        60.0, ge=1, le=3600, allow_inf_nan=False,
        description="an answered call whose far end sends no RTP this long is ended "
                    "(end reason media_timeout); calls on hold are exempt; null = never")

    @field_validator("music_on_hold")
    @classmethod
    def _music_readable(cls, value: Path | None) -> Path | None:
        if value is None:
            return value
        from ..media.wavfile import WavError, read_wav

        try:
            read_wav(value)
        except OSError as exc:
            raise ValueError(f"cannot read {value}: {exc.strerror}") from None
        except WavError as exc:
            raise ValueError(f"{value}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _range(self) -> "MediaConfig":
        if self.rtp_port_max - self.rtp_port_min < 2:
            raise ValueError("rtp_port_max: must be at least rtp_port_min + 2")
        return self

    @field_validator("codecs")
    @classmethod
    def _codecs(cls, values: list[str]) -> list[str]:
        known = {"PCMU", "PCMA", "G722"}
        upper = [v.upper() for v in values]
        unknown = [v for v in upper if v not in known]
        if unknown or not upper:
            raise ValueError(f"codecs must be from {sorted(known)}, got {values}")
        return upper


class DemoConfig(_Strict):
    operator_uri: str | None = Field(
        None, description="where transfers to a person go (the demo flow's operator, the agents' "
                          "transfer_to_human); default: none, or the demo's local test operator while the demo "
                          "line answers calls")


# Flows every install has: the demo line, and a 440 Hz test tone (a "milliwatt"
# line, as carriers and PBXes offer for checking audio paths).
BUILTIN_FLOWS = ("demo", "tone")


class RoutingConfig(_Strict):
    default_flow: str = Field("demo", description="flow for calls no route claims")
    unknown_number: Literal["default", "reject"] = Field(
        "default", description="a called number no route knows: play the default flow, or reject with 404 "
                               "(without digest auth on the inbound trunks, 404 tells scanners which numbers exist)")
    numbers: dict[str, str] = Field(default_factory=dict, description="called number / DID / SIP user -> flow")


class TrunkRegisterConfig(_Strict):
    """REGISTER to the carrier (RFC 3261 §10) so it sends this trunk's calls to us."""

    enabled: bool = True
    expires: int = Field(3600, ge=1, le=86400, description="requested binding lifetime in seconds")
    username: str | None = Field(None, min_length=1, description="default: the trunk's username")
    password: str | None = Field(None, min_length=1, description="default: the trunk's password")
    aor: str | None = Field(None, description="address-of-record; default sip:<username>@<trunk host>")
    contact_user: str | None = Field(None, min_length=1, description="user part of our Contact; default: username")

    @field_validator("aor")
    @classmethod
    def _aor_is_sip_uri(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from ..sip.errors import SipParseError
        from ..sip.uri import SipUri, parse_uri

        try:
            uri = parse_uri(value)
        except SipParseError as exc:
            raise ValueError(f"{value!r} is not a SIP URI ({exc.reason})") from None
        if not isinstance(uri, SipUri) or not uri.user:
            raise ValueError(f"{value!r} must be a sip: or sips: URI with a user, e.g. sip:1234@carrier.example")
        return value


class DialPolicyConfig(_Strict):
    """Which numbers a trunk may dial, and how many calls (call/dial_policy.py, docs/SECURITY.md)."""

    allow: list[str] = Field(default_factory=list, description="destination globs (+1555*, sip:*@x); empty = any "
                                                              "home-country number that is not premium rate")
    home_country: str = Field("+1", pattern=r"^\+[1-9][0-9]{0,2}$", description="numbers outside it are "
                                                                              "international: denied unless listed")
    max_concurrent: int | None = Field(None, ge=1, description="calls up at once through this trunk")
    max_per_minute: int | None = Field(None, ge=1, description="calls started per minute")
    max_per_day: int | None = Field(None, ge=1, description="calls started per 24 h (sliding)")


class OutboundConfig(_Strict):
    """Dialling out with no trunk, and caps across all trunks."""

    allow_uris: list[str] = Field(
        default_factory=lambda: ["sip:*@127.0.0.1:*", "sips:*@127.0.0.1:*", "sip:*@localhost:*", "sips:*@localhost:*"],
        description="SIP URI globs that may be dialled with no trunk (POST /api/calls, REFER); default loopback only")
    max_per_day: int | None = Field(None, ge=1, description="outbound calls per 24 h in all (sliding)")


class OutboundTrunk(_Strict):
    name: str = Field(min_length=1)
    host: str = Field(min_length=1, description="the carrier's SIP address, e.g. example.pstn.twilio.com")
    port: int = Field(5060, ge=1, le=65535)
    numbers: list[str] = Field(default_factory=list, description="caller-ID numbers this trunk may present")
    headers: dict[str, str] = Field(default_factory=dict, description="extra headers on every INVITE, e.g. X-Account")
    transport: Literal["udp", "tcp", "tls"] = "udp"
    username: str | None = None
    password: str | None = None
    caller_id: str | None = Field(None, description="number presented on calls through this trunk")
    # Spelled "register" in YAML; the attribute name avoids shadowing BaseModel's ABC ``register``.
    registration: TrunkRegisterConfig | None = Field(None, alias="register")
    policy: DialPolicyConfig = Field(default_factory=DialPolicyConfig)
    srtp: SrtpMode | None = Field(None, description=SRTP_DESCRIPTION + "; default: media.srtp")
    outbound_proxy: str | None = Field(
        None, max_length=255, description="send this trunk's calls through a SIP proxy (e.g. the cluster's Kamailio), "
                                          "e.g. sip:10.0.0.10:5060;transport=udp: the INVITE goes there with a "
                                          "pre-loaded Route (RFC 3261 §8.1.2)")
    _srtp_yaml_off = field_validator("srtp", mode="before")(_srtp_off)

    @field_validator("outbound_proxy")
    @classmethod
    def _proxy_is_a_sip_uri(cls, value: str | None) -> str | None:
        if value is not None:
            proxy_address(value)  # raises ValueError with the reason
        return value

    @model_validator(mode="after")
    def _srtp_needs_tls(self) -> "OutboundTrunk":
        if self.srtp in ("required", "optional") and self.transport != "tls":
            raise ValueError(f"srtp: {self.srtp} needs transport: tls (SDES keys travel in the SDP and may only "
                             "be sent over TLS, RFC 4568 §8.3)")
        return self

    @model_validator(mode="after")
    def _register_has_identity(self) -> "OutboundTrunk":
        register = self.registration
        if register is None or not register.enabled:
            return self
        username = register.username or self.username
        if username is None and register.aor is None:
            raise ValueError("register.username: needed to register (or set the trunk's username, or register.aor)")
        if username is not None and (register.password or self.password) is None:
            raise ValueError("register.password: needed with a username (or set the trunk's password)")
        return self


class LlmConfig(_Strict):
    base_url: str = Field(pattern=r"^https?://", description="OpenAI-compatible API root, e.g. http://127.0.0.1:8080/v1")
    model: str = Field(min_length=1)
    api_key: str | None = Field(None, description="sent as a bearer token; default: none")


class AgentConfig(_Strict):
    name: str = Field(min_length=1)
    instructions: str = Field("You are a helpful phone assistant.", description="the agent's base instructions")
    greeting: str | None = Field(None, description="first words after the handoff; default uses the handoff reason")
    provider: Literal["local", "holding", "nova_sonic", "openai_realtime"] = Field(
        "local", description="local: the offline engine (whisper, intents or a chat model, piper); holding: "
                             "acknowledge and hold; nova_sonic: Amazon Nova Sonic; openai_realtime: OpenAI Realtime")
    intents: Path | None = Field(None, description="intents file for the local engine; default: the demo's")
    llm: LlmConfig | None = Field(None, description="local engine: an OpenAI-compatible chat model instead of intents")
    silence_ms: int = Field(500, ge=200, le=3000, description="quiet that ends the caller's turn")
    language: str | None = Field(None, description="the language it speaks; default: the caller's IVR choice")
    max_session_s: float | None = Field(None, gt=0, description="local engine: renew its session this often (demo)")
    nova_sonic: dict[str, Any] = Field(default_factory=dict, description="Nova Sonic settings (docs/NOVA_SONIC.md)")
    openai_realtime: dict[str, Any] = Field(default_factory=dict, description="OpenAI Realtime settings")
    voice: str | None = Field(None, description="local: a piper or espeak-ng voice; cloud: the provider's voice")
    tools: list[str] | None = Field(None, description="built-in tools it may use: lookup_order (the demo's), "
                                                      "transfer_to_human, end_call, send_dtmf; default: the last "
                                                      "three (the demo line's agent: all four)")
    fallback: Literal["transfer", "holding"] = Field(
        "transfer", description="when the provider stays down: apologise, then transfer to the operator or hold")
    dispatch: Literal["auto", "explicit"] = Field(
        "auto", description="auto: IVR handoffs may reach it; explicit: only POST /api/dispatch starts it")

    @field_validator("tools")
    @classmethod
    def _known_tools(cls, values: list[str] | None) -> list[str] | None:
        from ..agent.desk import BUILTIN_TOOLS

        unknown = [v for v in values or [] if v not in BUILTIN_TOOLS]
        if unknown:
            raise ValueError(f"unknown tools {unknown} (built in: {', '.join(BUILTIN_TOOLS)})")
        return values

    @model_validator(mode="after")
    def _provider_settings(self) -> "AgentConfig":
        from ..agent.desk import cloud_factory  # the providers' own settings classes are the schema
        for provider, options in (("nova_sonic", self.nova_sonic), ("openai_realtime", self.openai_realtime)):
            if options and self.provider != provider:
                raise ValueError(f"{provider} settings given, but the provider is {self.provider}")
        if self.provider in ("nova_sonic", "openai_realtime"):
            cloud_factory(self.provider, dict(self.nova_sonic if self.provider == "nova_sonic"
                                              else self.openai_realtime))
        return self


class ApiConfig(_Strict):
    """The HTTP API's defences (docs/SECURITY.md): a token always, our names only, bounded bodies and connections."""

    token: str | None = Field(None, min_length=16,
                              description="bearer token every request but GET /healthz must carry; "
                                          "default: generated once into <data_dir>/api_token")
    allowed_hosts: list[str] = Field(default_factory=list, description="more Host names the API answers to: "
                                                                       "'name' (any port) or 'name:port'")
    allowed_origins: list[str] = Field(default_factory=list, description="browser origins that may call the API, "
                                                                         "e.g. https://dashboard.example")
    max_body_bytes: int = Field(1024 * 1024, ge=1024, le=64 * 1024 * 1024, description="larger bodies get 413")
    body_timeout_s: float = Field(30.0, gt=0, le=3600, description="a body not received in this time gets 408")
    header_timeout_s: float = Field(10.0, gt=0, le=300, description="request headers not complete in this time: "
                                                                    "the connection is closed")
    max_connections_per_client: int = Field(32, ge=1, le=100_000, description="open connections from one address "
                                                                              "(an IPv6 /64); more are closed")
    max_connections: int = Field(512, ge=1, le=1_000_000, description="open HTTP connections in all")
    session_hours: float = Field(12.0, gt=0, le=24 * 30, description="how long a console sign-in lasts "
                                                                   "(a signed cookie; a new token ends them all)")

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, values: list[str]) -> list[str]:
        from .origins import parse_authority

        for value in values:
            if parse_authority(value) is None:
                raise ValueError(f"{value!r} is not a host name or host:port (IPv6 in brackets)")
        return values

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, values: list[str]) -> list[str]:
        from .origins import parse_origin

        for value in values:
            if parse_origin(value) is None:
                raise ValueError(f"{value!r} is not an origin like https://dashboard.example or http://host:8080")
        return values


class IceServerConfig(_Strict):
    urls: list[str] = Field(min_length=1, description="stun:host:port or turn:host:port?transport=udp|tcp "
                                                      "(turns: for TLS)")
    username: str | None = Field(None, min_length=1, description="TURN username")
    credential: str | None = Field(None, min_length=1, description="TURN password")

    @field_validator("urls")
    @classmethod
    def _ice_urls(cls, values: list[str]) -> list[str]:
        for value in values:
            if not value.startswith(("stun:", "turn:", "turns:")) or len(value) > 512:
                raise ValueError(f"{value!r} is not a stun:, turn: or turns: URL")
        return values

    @model_validator(mode="after")
    def _turn_needs_credentials(self) -> "IceServerConfig":
        if any(u.startswith(("turn:", "turns:")) for u in self.urls) and not (self.username and self.credential):
            raise ValueError("urls: a TURN server needs username and credential")
        return self


class WebRtcConfig(_Strict):
    """The browser softphone (/phone): calls from a browser through aiortc, routed like SIP calls."""

    enabled: bool = Field(True, description="serve POST /api/webrtc/calls (the /phone page's calls)")
    max_calls: int = Field(20, ge=1, le=10_000, description="browser calls up at once (they count in "
                                                           "server.max_calls too); beyond it 503")
    ice_servers: list[IceServerConfig] = Field(
        default_factory=list, description="STUN/TURN servers for browsers that cannot reach this host directly "
                                          "(none by default: host candidates only, e.g. on a LAN)")
    connect_timeout_s: float = Field(15.0, gt=0, le=120, description="a browser not connected (ICE + DTLS) "
                                                                     "this long after its offer is dropped")
    gather_timeout_s: float = Field(8.0, gt=0, le=60, description="ICE gathering (STUN/TURN answers) longer "
                                                                  "than this: the offer gets 503")


class WebhooksConfig(_Strict):
    url: str | None = Field(None, pattern=r"^https?://", description="where call events are POSTed")
    secret: str | None = Field(None, min_length=16, description="HMAC-SHA256 key for X-Callbridge-Signature")
    events: list[str] = Field(default_factory=lambda: ["call.status", "call.ended"],
                              description="which events to send: call.status, call.ended")

    @field_validator("events")
    @classmethod
    def _known_events(cls, values: list[str]) -> list[str]:
        unknown = [v for v in values if v not in WEBHOOK_EVENTS]
        if unknown:
            raise ValueError(f"unknown webhook events {unknown} (known: {', '.join(WEBHOOK_EVENTS)})")
        return values

    @model_validator(mode="after")
    def _secret_with_url(self) -> "WebhooksConfig":
        if self.url and not self.secret:
            raise ValueError("secret: webhooks need a secret to sign with")
        return self


WEBHOOK_EVENTS = ("call.status", "call.ended")


class DatabaseConfig(_Strict):
    url: str | None = Field(None, description="SQLAlchemy URL (postgresql://...); default SQLite in data_dir")


class PromptConfig(_Strict):
    cache_dir: Path | None = Field(None, description="rendered prompt audio; default ~/.cache/callbridge/prompts")
    prerender: bool = Field(True, description="render static prompts at start-up so no caller waits for TTS")


class SecurityConfig(_Strict):
    """Back-off and bans for failed digest logins (callbridge.sip.guard), per source address and username."""

    auth_failures_before_backoff: int = Field(
        3, ge=1, le=1000, description="failed logins after which further attempts get 403 unchecked, "
                                      "for 1 s doubling per failure (up to 60 s)")
    auth_failures_before_ban: int = Field(
        10, ge=1, le=10000, description="failed logins (checked or not) after which the source gets no answers")
    failure_window_seconds: float = Field(600.0, gt=0, description="failures are forgotten this long after the last")
    backoff_seconds: float = Field(1.0, ge=0, le=60, description="first back-off; doubles per further failure")
    ban_seconds: float = Field(600.0, gt=0, description="first ban; each repeat offence doubles it")
    max_ban_seconds: float = Field(86400.0, gt=0, description="longest a repeated ban grows")
    max_tracked: int = Field(10000, ge=10, le=1_000_000, description="sources and usernames remembered at most")
    secret_key_file: Path | None = Field(None,
                                         description="key for trunk passwords at rest (32 bytes, base64); "
                                                     "default: $CALLBRIDGE_SECRET_KEY, else <data_dir>/secret.key")

    @model_validator(mode="after")
    def _ordered(self) -> "SecurityConfig":
        if self.auth_failures_before_ban < self.auth_failures_before_backoff:
            raise ValueError("auth_failures_before_ban: must be at least auth_failures_before_backoff")
        return self


class Config(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    media: MediaConfig = Field(default_factory=MediaConfig)
    inbound_trunks: list[InboundTrunk] = Field(default_factory=list)
    outbound_trunks: list[OutboundTrunk] = Field(default_factory=list)
    flows: dict[str, Path] = Field(default_factory=dict, description="flow name -> YAML flow file")
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    agents: list[AgentConfig] = Field(default_factory=lambda: [AgentConfig(name="assistant")])
    prompts: PromptConfig = Field(default_factory=PromptConfig)
    demo: DemoConfig = Field(default_factory=DemoConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    webhooks: WebhooksConfig = Field(default_factory=WebhooksConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    outbound: OutboundConfig = Field(default_factory=OutboundConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    webrtc: WebRtcConfig = Field(default_factory=WebRtcConfig)
    source: str | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _unique_names(self) -> "Config":
        for what, names in (("trunk", [t.name for t in self.inbound_trunks + self.outbound_trunks]),
                            ("agent", [a.name for a in self.agents])):
            duplicates = {n for n in names if names.count(n) > 1}
            if duplicates:
                raise ValueError(f"duplicate {what} names: {sorted(duplicates)}")
        return self

    @model_validator(mode="after")
    def _flows_exist(self) -> "Config":
        known = set(self.flows) | set(BUILTIN_FLOWS)
        for name in self.flows:
            if name in BUILTIN_FLOWS:
                raise ValueError(f"flows.{name}: {name!r} is a built-in flow name; choose another")
        references = [("routing.default_flow", self.routing.default_flow)]
        references += [(f"routing.numbers.{number}", flow) for number, flow in self.routing.numbers.items()]
        for index, trunk in enumerate(self.inbound_trunks):
            if trunk.flow:
                references.append((f"inbound_trunks.{index}.flow", trunk.flow))
            references += [(f"inbound_trunks.{index}.routes.{number}", flow) for number, flow in trunk.routes.items()]
        for where, flow in references:
            if flow not in known:
                raise ValueError(f"{where}: unknown flow {flow!r} (known: {', '.join(sorted(known))})")
        return self

    @property
    def base_dir(self) -> Path:
        """Where relative paths in the config (flows, intents) are resolved: the file's folder."""
        return Path(self.source).resolve().parent if self.source else Path.cwd()

    @property
    def agent_names(self) -> set[str]:
        return {a.name for a in self.agents}

    @property
    def outbound_trunk_names(self) -> set[str]:
        return {t.name for t in self.outbound_trunks}


def load_config(path: str | Path) -> Config:
    located = load_yaml(path)
    return config_from(located)


def config_from(located: Located) -> Config:
    if not isinstance(located.value, dict):
        raise SourceError(located.position(()), "the config must be a mapping at the top level")
    try:
        config = Config.model_validate(located.value)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = tuple(p for p in first["loc"] if not isinstance(p, str) or not p.startswith("function-"))
        # Model-level checks name their field as "field: reason"; point at that field.
        field_path, sep, _ = first["msg"].removeprefix("Value error, ").partition(": ")
        if sep:
            path = _deepest_known(located, path, field_path.split("."))
        raise SourceError(located.position(path), _describe(first)) from None
    config.source = located.file
    return config


def _deepest_known(located: Located, path: tuple, parts: list[str]) -> tuple:
    """Follow "a.0.b" from ``path`` as far as the file has positions (list indexes are ints)."""
    for part in parts:
        for key in (part, int(part)) if part.isdecimal() else (part,):  # "²".isdigit(), but int("²") fails
            if path + (key,) in located.positions:
                path = path + (key,)
                break
        else:
            break
    return path


def _describe(error: Mapping[str, Any]) -> str:
    location = ".".join(str(p) for p in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"unknown key {location!r}"
    return f"{location}: {message}" if location else message


__all__ = ["Config", "SourceError", "Position", "load_config"]
