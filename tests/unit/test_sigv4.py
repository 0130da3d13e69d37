"""SigV4 verification in the Bedrock stand-in, checked against the AWS SDK's own signers."""

from __future__ import annotations

import datetime
import hashlib
import hmac

import pytest
from aws_sdk_signers import (URI, AsyncEventSigner, AsyncSigV4Signer, AWSCredentialIdentity, AWSRequest, Field,
                             Fields)
from smithy_aws_event_stream.events import EventHeaderEncoder, EventMessage

from callbridge.standins import eventstream, sigv4

ACCESS, SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SECRETS = {ACCESS: SECRET}
PATH = "/model/amazon.nova-2-sonic-v1%3A0/invoke-with-bidirectional-stream"


def test_signing_key_matches_the_aws_documentation_example() -> None:
    # "Derive a signing key" example in the AWS SigV4 documentation (IAM, 2012-02-15).
    key = sigv4.signing_key(SECRET, "20120215", "us-east-1", "iam")
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


def test_signing_key_is_the_documented_hmac_chain() -> None:
    def h(key: bytes, msg: str) -> bytes:
        return hmac.new(key, msg.encode(), hashlib.sha256).digest()
    expected = h(h(h(h(b"AWS4" + SECRET.encode(), "20250101"), "eu-north-1"), "bedrock"), "aws4_request")
    assert sigv4.signing_key(SECRET, "20250101", "eu-north-1", "bedrock") == expected


async def sdk_signed(secret: str = SECRET) -> tuple[dict[str, str], datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    request = AWSRequest(
        destination=URI(host="127.0.0.1", port=8443, path=PATH),
        method="POST", body=None,
        fields=Fields([Field(name="Content-Type", values=["application/vnd.amazon.eventstream"]),
                       Field(name="X-Amz-Content-SHA256", values=[sigv4.STREAMING_EVENTS_PAYLOAD])]))
    # the async signer is the one the Bedrock client uses (it honours the streaming payload hash)
    signed = await AsyncSigV4Signer().sign(
        request=request, identity=AWSCredentialIdentity(access_key_id=ACCESS, secret_access_key=secret),
        properties={"region": "us-east-1", "service": "bedrock", "date": now.strftime(sigv4.TIMESTAMP_FORMAT)})
    headers = {field.name.lower(): field.as_string() for field in signed.fields}
    headers.setdefault("host", "127.0.0.1:8443")
    return headers, now


def verify(headers: dict[str, str], now: datetime.datetime, path: str = PATH) -> sigv4.VerifiedRequest:
    return sigv4.verify_request(method="POST", path=path, headers=headers, secrets=SECRETS, service="bedrock",
                                now=now)


async def test_verifies_a_request_signed_by_the_sdk() -> None:
    headers, now = await sdk_signed()
    verified = verify(headers, now)
    assert verified.credential.region == "us-east-1" and len(verified.signature) == 64


@pytest.mark.parametrize("tamper", ["secret", "path", "header", "date_skew", "service", "unknown_key"])
async def test_tampering_fails(tamper: str) -> None:
    headers, now = await sdk_signed("wrong-secret" if tamper == "secret" else SECRET)
    path = PATH
    if tamper == "path":
        path = PATH.replace("nova-2-sonic", "nova-sonic")
    elif tamper == "header":
        headers["content-type"] = "application/json"
    elif tamper == "date_skew":
        now += datetime.timedelta(minutes=20)
    elif tamper == "service":
        headers["authorization"] = headers["authorization"].replace("/bedrock/", "/s3/")
    elif tamper == "unknown_key":
        headers["authorization"] = headers["authorization"].replace(ACCESS, "AKIDOTHER")
    with pytest.raises(sigv4.SignatureError):
        verify(headers, now, path)


async def test_missing_or_malformed_authorization() -> None:
    headers, now = await sdk_signed()
    with pytest.raises(sigv4.SignatureError) as missing:
        verify({k: v for k, v in headers.items() if k != "authorization"}, now)
    assert missing.value.error_type == "MissingAuthenticationTokenException"
    headers["authorization"] = "AWS4-HMAC-SHA256 garbage"
    with pytest.raises(sigv4.SignatureError):
        verify(headers, now)


async def sdk_chunks(seed: str, payloads: list[bytes], secret: str = SECRET) -> list[eventstream.Message]:
    signer = AsyncEventSigner(initial_signature=seed.encode(), event_encoder_cls=EventHeaderEncoder)
    identity = AWSCredentialIdentity(access_key_id=ACCESS, secret_access_key=secret)
    properties = {"region": "us-east-1", "service": "bedrock"}
    envelopes = []
    for payload in payloads:
        inner = EventMessage(headers={":event-type": "chunk"}, payload=payload)
        envelopes.append(await signer.sign(event=inner, identity=identity, properties=properties))
    envelopes.append(await signer.sign_empty(event=EventMessage(), identity=identity, properties=properties))
    return [eventstream.decode(envelope.encode()) for envelope in envelopes]


async def test_chunk_signature_chain_from_the_sdk_verifies() -> None:
    headers, now = await sdk_signed()
    verified = verify(headers, now)
    envelopes = await sdk_chunks(verified.signature, [b"one", b"two"])
    chain = sigv4.ChunkChain(verified)
    inners = [chain.verify(envelope) for envelope in envelopes]
    assert [eventstream.decode(inner).payload for inner in inners[:2]] == [b"one", b"two"]
    assert inners[2] == b"" and chain.ended
    with pytest.raises(sigv4.SignatureError):
        chain.verify(envelopes[0])  # nothing may follow the final envelope


@pytest.mark.parametrize("tamper", ["reorder", "payload", "secret", "seed", "missing_signature"])
async def test_chunk_chain_tampering_fails(tamper: str) -> None:
    headers, now = await sdk_signed()
    verified = verify(headers, now)
    envelopes = await sdk_chunks("0" * 64 if tamper == "seed" else verified.signature, [b"one", b"two"],
                                 "bad" if tamper == "secret" else SECRET)
    if tamper == "reorder":
        envelopes[0], envelopes[1] = envelopes[1], envelopes[0]
    elif tamper == "payload":
        envelopes[1] = eventstream.Message(envelopes[1].headers, envelopes[1].payload[:-1] + b"X")
    elif tamper == "missing_signature":
        del envelopes[1].headers[":chunk-signature"]
    chain = sigv4.ChunkChain(verified)
    with pytest.raises(sigv4.SignatureError):
        for envelope in envelopes:
            chain.verify(envelope)
