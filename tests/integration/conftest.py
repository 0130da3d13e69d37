"""What every test of the cloud adapters against the stand-ins needs: a test CA the AWS SDK trusts,
and an AWS environment that cannot reach a real account."""

from __future__ import annotations

import shutil

import pytest

from callbridge.standins.certs import StandinCertificates, make_certificates


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> StandinCertificates:
    if shutil.which("openssl") is None:  # a missing tool is a failure, never a skip
        pytest.fail("openssl is not installed; scripts/setup.sh installs it")
    return make_certificates(tmp_path_factory.mktemp("standin-certs"))


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, certs: StandinCertificates) -> None:
    # awscrt reads SSL_CERT_FILE when a client TLS context is made: the adapter makes one per start().
    monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca_cert))
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
