"""A local Bedrock Runtime that the real AWS SDK talks to: InvokeModelWithBidirectionalStream.

asyncio + TLS (ALPN ``h2``, the CRT transport will not speak cleartext h2c) + the pure
Python ``h2`` state machine. Per HTTP/2 stream it verifies SigV4 on the request and on
every chunk of the signed event stream, unwraps the envelopes and hands the input events
to a scripted :class:`~callbridge.standins.bedrock_model.ModelSession`.

Run it by hand: ``python -m callbridge.standins.bedrock --port 8443 --certs DIR``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import datetime
import json
import logging
import re
import ssl
import uuid
from dataclasses import dataclass, field
from urllib.parse import unquote

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (ConnectionTerminated, DataReceived, RequestReceived, StreamEnded, StreamReset,
                       WindowUpdated)
from h2.exceptions import H2Error

from callbridge.standins import eventstream, sigv4
from callbridge.standins.bedrock_model import ModelSession, OutEvent, OutException
from callbridge.standins.bedrock_script import (DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, BedrockScript, Say,
                                                SessionRecord)
from callbridge.standins.certs import StandinCertificates, make_certificates

log = logging.getLogger(__name__)

SERVICE = "bedrock"
EVENT_STREAM_TYPE = "application/vnd.amazon.eventstream"
KNOWN_MODELS = ("amazon.nova-sonic-v1:0", "amazon.nova-2-sonic-v1:0")
_PATH = re.compile(r"^/model/(?P<model>[^/?]+)/invoke-with-bidirectional-stream(\?.*)?$")
READ_SIZE = 65536


@dataclass(slots=True)
class _Stream:
    stream_id: int
    record: SessionRecord
    model: ModelSession
    chain: sigv4.ChunkChain
    done: asyncio.Event
    decoder: eventstream.Decoder = field(default_factory=eventstream.Decoder)
    outbox: bytearray = field(default_factory=bytearray)
    ended: bool = False  # we sent END_STREAM
    timer: asyncio.TimerHandle | None = None


def _event_message(body: dict) -> bytes:
    inner = json.dumps({"bytes": base64.b64encode(json.dumps(body).encode()).decode()}).encode()
    return eventstream.encode(eventstream.Message(
        {":message-type": "event", ":event-type": "chunk", ":content-type": "application/json"}, inner))


def _exception_message(name: str, message: str) -> bytes:
    return eventstream.encode(eventstream.Message(
        {":message-type": "exception", ":exception-type": name, ":content-type": "application/json"},
        json.dumps({"message": message}).encode()))


def _input_event(inner: eventstream.Message) -> dict:
    """Unwrap one client message: a ``chunk`` event whose JSON payload holds base64 event JSON."""
    if inner.value(":message-type") != "event" or inner.value(":event-type") != "chunk":
        raise ValueError("client messages must be :message-type event, :event-type chunk")
    try:
        wrapper = json.loads(inner.payload)
        event = json.loads(base64.b64decode(wrapper["bytes"], validate=True))
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise ValueError(f"chunk payload is not {{\"bytes\": <base64 JSON>}}: {exc}") from None
    if not isinstance(event, dict):
        raise ValueError("event JSON must be an object")
    return event


class _Connection:
    """One TLS connection: the h2 state machine plus the streams on it."""

    def __init__(self, server: BedrockStandin, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.writer = writer
        self.h2 = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        self.streams: dict[int, _Stream] = {}
        self.loop = asyncio.get_running_loop()

    def flush_socket(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def handle(self, event: object) -> bool:
        """Process one h2 event; False when the connection is over."""
        match event:
            case RequestReceived():
                self.request(event.stream_id, dict(event.headers))  # type: ignore[arg-type]
            case DataReceived():
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                stream = self.streams.get(event.stream_id)
                if stream is not None and not stream.model.closed:
                    self.data(stream, event.data)
                    self.pump(stream)
            case StreamEnded():
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.model.closed = True  # the client sends nothing more: answer END_STREAM
                    self.pump(stream)
            case StreamReset():
                self.finish(event.stream_id)
            case WindowUpdated():
                targets = self.streams.values() if event.stream_id == 0 else (
                    [self.streams[event.stream_id]] if event.stream_id in self.streams else [])
                for stream in list(targets):
                    self.pump(stream)
            case ConnectionTerminated():
                return False
        return True

    def request(self, stream_id: int, headers: dict[str, str]) -> None:
        match = _PATH.match(headers.get(":path", ""))
        if headers.get(":method") != "POST" or match is None:
            self.refuse(stream_id, 404, "UnknownOperationException", "unknown operation")
            return
        model_id = unquote(match["model"])
        headers.setdefault("host", headers.get(":authority", ""))
        try:
            verified = sigv4.verify_request(
                method="POST", path=headers[":path"], headers=headers, secrets=self.server.script.credentials,
                service=SERVICE, now=datetime.datetime.now(datetime.UTC))
        except sigv4.SignatureError as exc:
            log.info("bedrock stand-in refused a request: %s", exc)
            self.refuse(stream_id, 403, exc.error_type, str(exc))
            return
        if headers.get("x-amz-content-sha256") != sigv4.STREAMING_EVENTS_PAYLOAD:
            self.refuse(stream_id, 400, "ValidationException", "expected a signed event-stream body")
            return
        if model_id not in KNOWN_MODELS:
            self.refuse(stream_id, 400, "ValidationException", "The provided model identifier is invalid.")
            return
        record = SessionRecord(model_id=model_id, region=verified.credential.region)
        stream = _Stream(stream_id, record, ModelSession(self.server.script, record, self.loop.time()),
                         sigv4.ChunkChain(verified), asyncio.Event())
        self.streams[stream_id] = stream
        self.server.sessions.append(record)
        self.server.done.append(stream.done)
        self.h2.send_headers(stream_id, [(":status", "200"), ("content-type", EVENT_STREAM_TYPE),
                                         ("x-amzn-requestid", str(uuid.uuid4()))])
        self.arm_timer(stream)

    def refuse(self, stream_id: int, status: int, error_type: str, message: str) -> None:
        body = json.dumps({"message": message}).encode()
        self.h2.send_headers(stream_id, [(":status", str(status)), ("content-type", "application/json"),
                                         ("x-amzn-errortype", error_type),
                                         ("x-amzn-requestid", str(uuid.uuid4())),
                                         ("content-length", str(len(body)))])
        self.h2.send_data(stream_id, body, end_stream=True)

    def data(self, stream: _Stream, data: bytes) -> None:
        try:
            for envelope in stream.decoder.feed(data):
                payload = stream.chain.verify(envelope)
                if not payload:
                    continue  # the signed empty envelope: no more events
                event = _input_event(eventstream.decode(payload))
                stream.model.receive(event, self.loop.time())
                if stream.model.closed:
                    return
        except sigv4.SignatureError as exc:
            log.info("bedrock stand-in: bad chunk signature: %s", exc)
            stream.model.fail("validationException", f"{exc.error_type}: {exc}")
        except (eventstream.EventStreamError, ValueError) as exc:
            log.info("bedrock stand-in: malformed input: %s", exc)
            stream.model.fail("validationException", f"malformed event stream: {exc}")
        except Exception as exc:  # a stand-in bug: tell the client, keep serving
            log.exception("bedrock stand-in: internal error")
            stream.model.fail("internalServerException", f"stand-in internal error: {exc}")

    def pump(self, stream: _Stream) -> None:
        """Queue the model's output and send what flow control allows (RFC 9113 §5.2)."""
        for item in stream.model.take_output():
            if isinstance(item, OutEvent):
                stream.outbox += _event_message(item.body)
            else:
                assert isinstance(item, OutException)
                stream.outbox += _exception_message(item.name, item.message)
        try:
            while stream.outbox and not stream.ended:
                window = min(self.h2.local_flow_control_window(stream.stream_id),
                             self.h2.max_outbound_frame_size)
                if window <= 0:
                    break
                chunk = bytes(stream.outbox[:window])
                del stream.outbox[:window]
                self.h2.send_data(stream.stream_id, chunk)
            if stream.model.closed and not stream.outbox and not stream.ended:
                stream.ended = True
                self.h2.end_stream(stream.stream_id)
                self.finish(stream.stream_id)
        except H2Error as exc:  # the client reset or closed the stream under us
            log.info("bedrock stand-in: stream %d gone: %s", stream.stream_id, exc)
            self.finish(stream.stream_id)
            return
        self.arm_timer(stream)

    def arm_timer(self, stream: _Stream) -> None:
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None
        deadline = stream.model.next_deadline()
        if deadline is not None and not stream.ended:
            stream.timer = self.loop.call_at(deadline, self.on_timer, stream)

    def on_timer(self, stream: _Stream) -> None:
        stream.timer = None
        stream.model.on_timer(self.loop.time())
        self.pump(stream)
        self.flush_socket()

    def finish(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        stream.model.closed = True
        if stream.timer is not None:
            stream.timer.cancel()
        stream.done.set()

    def close(self) -> None:
        for stream_id in list(self.streams):
            self.finish(stream_id)


class BedrockStandin:
    """The server. ``sessions[i]`` is the record of the i-th accepted stream; ``done[i]`` is set
    when that stream is over (either side ended it)."""

    def __init__(self, script: BedrockScript, certs: StandinCertificates, *, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.script = script
        self.sessions: list[SessionRecord] = []
        self.done: list[asyncio.Event] = []
        self._certs = certs
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self.connections_accepted = 0  # TLS connections; sessions share them as HTTP/2 streams

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return self._server.sockets[0].getsockname()[1]

    @property
    def endpoint_uri(self) -> str:
        return f"https://{self._host}:{self.port}"

    async def start(self) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self._certs.server_cert, self._certs.server_key)
        context.set_alpn_protocols(["h2"])
        self._server = await asyncio.start_server(self._serve, self._host, self._port, ssl=context)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for connection in list(self._connections):
                connection.close()
                connection.writer.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> BedrockStandin:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def wait_session_done(self, index: int, timeout: float = 5.0) -> SessionRecord:
        async with asyncio.timeout(timeout):
            while len(self.done) <= index:
                await asyncio.sleep(0.01)
            await self.done[index].wait()
        return self.sessions[index]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(self, writer)
        self._connections.add(connection)
        self.connections_accepted += 1
        connection.h2.initiate_connection()
        connection.flush_socket()
        try:
            while True:
                data = await reader.read(READ_SIZE)
                if not data:
                    break
                try:
                    events = connection.h2.receive_data(data)
                except H2Error as exc:
                    log.warning("bedrock stand-in: HTTP/2 protocol error: %s", exc)
                    break
                if not all([connection.handle(event) for event in events]):
                    break
                connection.flush_socket()
                await writer.drain()
            connection.flush_socket()
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            log.info("bedrock stand-in: connection lost: %s", exc)
        finally:
            connection.close()
            self._connections.discard(connection)
            writer.close()


# -- command line ----------------------------------------------------------------------------

def _demo_script() -> BedrockScript:
    return BedrockScript(greeting=Say("Hello, this is the Bedrock stand-in.", audio_ms=1500),
                         fallback=Say("I heard you.", audio_ms=800, user_text="(caller speech)"),
                         end_of_turn_ms=800)


async def _main(port: int, certs_dir: str) -> None:
    certs = make_certificates(certs_dir)
    server = BedrockStandin(_demo_script(), certs, port=port)
    await server.start()
    print(f"Bedrock stand-in on {server.endpoint_uri}")
    print(f"CA certificate: {certs.ca_cert}")
    print(f"export SSL_CERT_FILE={certs.ca_cert}")
    print(f"export AWS_ACCESS_KEY_ID={DEFAULT_ACCESS_KEY}")
    print(f"export AWS_SECRET_ACCESS_KEY={DEFAULT_SECRET_KEY}")
    print("export AWS_REGION=us-east-1")
    print(f"Nova Sonic endpoint_uri: {server.endpoint_uri}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local Bedrock Nova Sonic stand-in (HTTP/2 over TLS).")
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--certs", required=True, help="directory for the test CA and server certificate")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    try:
        asyncio.run(_main(args.port, args.certs))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
