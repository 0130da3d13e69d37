"""The service configuration: a YAML file validated with pydantic.

Every error names file:line:column (see :mod:`callbridge.yamlsource`); the
CLI prints it and exits with status 2.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..yamlsource import Located, Position, SourceError, load_yaml

DEFAULT_OPERATOR_URI = "sip:operator@127.0.0.1:5099"


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
    nice: int | None = Field(None, ge=-20, le=19,
                             description="process priority; negative runs media ahead of other work (needs root/CAP_SYS_NICE)")

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
    operator_uri: str = DEFAULT_OPERATOR_URI


# Flows every install has: the demo line, and a 440 Hz test tone (a "milliwatt"
# line, as carriers and PBXes offer for checking audio paths).
BUILTIN_FLOWS = ("demo", "tone")


class RoutingConfig(_Strict):
    default_flow: str = Field("demo", description="flow for calls no route claims")
    unknown_number: Literal["default", "reject"] = Field(
        "default", description="a called number no route knows: play the default flow, or reject with 404")
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
    tools: list[str] | None = Field(None, description="built-in tools it may use; default all: "
                                                      "lookup_order, transfer_to_human, end_call, send_dtmf")
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
    token: str | None = Field(None, min_length=16, description="bearer token every /api request must carry")


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
        for key in (part, int(part)) if part.isdigit() else (part,):
            if path + (key,) in located.positions:
                path = path + (key,)
                break
        else:
            break
    return path


def _describe(error: dict) -> str:
    location = ".".join(str(p) for p in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"unknown key {location!r}"
    return f"{location}: {message}" if location else message


__all__ = ["Config", "SourceError", "Position", "load_config"]
