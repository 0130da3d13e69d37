"""Make a throw-away test CA and a server certificate for 127.0.0.1/localhost.

Uses the ``openssl`` command line tool (no Python crypto dependency). Keys are
EC P-256 so generation takes milliseconds.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class TestCertificates:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


TestCertificates.__test__ = False  # type: ignore[attr-defined]  # not a pytest test class


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_test_certificates(
    directory: str | Path,
    *,
    common_name: str = "localhost",
    dns_names: tuple[str, ...] = ("localhost",),
    ip_addresses: tuple[str, ...] = ("127.0.0.1",),
    days: int = 2,
) -> TestCertificates:
    """Create ``ca.pem``/``ca.key`` and ``server.pem``/``server.key`` in ``directory``.

    The server certificate is signed by the CA and carries the given DNS and
    IP subjectAltNames (default DNS:localhost, IP:127.0.0.1).
    """
    if shutil.which("openssl") is None:
        raise RuntimeError("the openssl command line tool is required")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = out / "ca.key", out / "ca.pem"
    key, csr, cert = out / "server.key", out / "server.csr", out / "server.pem"
    ext = out / "server.ext"

    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(ca_key), cwd=out)
    _openssl(
        "req", "-x509", "-new", "-key", str(ca_key), "-sha256", "-days", str(days),
        "-subj", "/CN=callbridge test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-out", str(ca_cert),
        cwd=out,
    )  # fmt: skip
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key), cwd=out)
    _openssl("req", "-new", "-key", str(key), "-subj", f"/CN={common_name}", "-out", str(csr), cwd=out)
    san = ",".join([*(f"DNS:{name}" for name in dns_names), *(f"IP:{ip}" for ip in ip_addresses)])
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        f"subjectAltName={san}\n"
    )
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
        "-sha256", "-days", str(days), "-extfile", str(ext), "-out", str(cert),
        cwd=out,
    )  # fmt: skip
    return TestCertificates(ca_cert=ca_cert, ca_key=ca_key, server_cert=cert, server_key=key)
