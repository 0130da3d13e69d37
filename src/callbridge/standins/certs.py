"""A throw-away CA and a server certificate for 127.0.0.1, made with the ``openssl`` CLI.

The Bedrock SDK's CRT transport only speaks HTTP/2 over TLS (ALPN ``h2``), so a local
stand-in needs a certificate the client trusts: point ``SSL_CERT_FILE`` at ``ca.pem``.
EC P-256 keys keep generation to milliseconds.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL_TIMEOUT_S = 30
VALID_DAYS = 2


@dataclass(frozen=True, slots=True)
class StandinCertificates:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def _run(args: list[str], cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True,
                            timeout=OPENSSL_TIMEOUT_S)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def make_certificates(directory: str | Path, *, host_ip: str = "127.0.0.1") -> StandinCertificates:
    """Write ca.pem/ca.key and server.pem/server.key into ``directory`` (reused if present)."""
    if shutil.which("openssl") is None:
        raise RuntimeError("the openssl command line tool is required (apt install openssl)")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    certs = StandinCertificates(out / "ca.pem", out / "server.pem", out / "server.key")
    if all(path.exists() for path in (certs.ca_cert, certs.server_cert, certs.server_key)):
        return certs
    _run(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key"], out)
    _run(["req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", str(VALID_DAYS),
          "-subj", "/CN=callbridge stand-in CA",
          "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign",
          "-out", "ca.pem"], out)
    _run(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "server.key"], out)
    _run(["req", "-new", "-key", "server.key", "-subj", "/CN=localhost", "-out", "server.csr"], out)
    (out / "server.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        f"subjectAltName=DNS:localhost,IP:{host_ip}\n"
    )
    _run(["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
          "-sha256", "-days", str(VALID_DAYS), "-extfile", "server.ext", "-out", "server.pem"], out)
    return certs
