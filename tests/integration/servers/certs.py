"""Self-signed TLS certificates for the test receivers (rsyslog, SMTP), made with Debian's ``openssl``.

One certificate for ``localhost`` and ``127.0.0.1`` that is its own CA: a
client trusts it by naming the certificate file as its CA bundle, and the
name check passes for either host name. Made fresh in a test's directory, so
no key outlives the test run.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TestCertificate:
    cert: Path
    key: Path


def self_signed(directory: Path, name: str = "localhost") -> TestCertificate:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl not found: apt-get install -y openssl (scripts/install.sh --test does)")
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    key.chmod(0o600)
    return TestCertificate(cert, key)
