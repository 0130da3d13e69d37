"""Build ``ssl.SSLContext`` objects for SIP over TLS (RFC 3261 §26.2, RFC 5630).

Nothing clever: TLS 1.2 or newer, the library's default cipher choice, and
certificate verification on by default for outbound connections (RFC 5922
expects the client to check the server's identity).
"""

from __future__ import annotations

import os
import ssl

StrPath = str | os.PathLike[str]

# TLS 1.0/1.1 are deprecated (RFC 8996); every SIP stack still in service speaks 1.2.
MINIMUM_TLS_VERSION = ssl.TLSVersion.TLSv1_2


def server_context(
    certfile: StrPath,
    keyfile: StrPath | None = None,
    *,
    cafile: StrPath | None = None,
    require_client_cert: bool = False,
    password: str | None = None,
) -> ssl.SSLContext:
    """Context for the listening side.

    ``cafile`` is only used to verify client certificates (mutual TLS); with
    ``require_client_cert`` the handshake fails for clients without a
    certificate signed by it.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_TLS_VERSION
    context.load_cert_chain(certfile, keyfile, password=password)
    if cafile is not None:
        context.load_verify_locations(cafile=cafile)
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    elif require_client_cert:
        raise ValueError("require_client_cert needs a cafile to verify against")
    return context


def client_context(
    *,
    cafile: StrPath | None = None,
    certfile: StrPath | None = None,
    keyfile: StrPath | None = None,
    verify: bool = True,
    password: str | None = None,
) -> ssl.SSLContext:
    """Context for outbound connections.

    Without ``cafile`` the system trust store is used. ``certfile``/``keyfile``
    present a client certificate (mutual TLS). ``verify=False`` disables both
    chain and host name checks; only for lab setups.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    context.minimum_version = MINIMUM_TLS_VERSION
    if certfile is not None:
        context.load_cert_chain(certfile, keyfile, password=password)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
