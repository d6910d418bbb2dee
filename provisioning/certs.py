"""A small certificate authority for the broker's TLS, made with the ``openssl`` command.

The ``cryptography`` package is not a dependency of coverwatch, and every server that
runs the compose stack has ``openssl`` (Debian: package openssl), so the CA and the broker
certificate are made by running it: an ECDSA P-256 CA valid 10 years, and a broker
certificate signed by it with the broker's host names and addresses as subjectAltName,
valid 825 days (renew with ``coverwatch deploy init --renew-broker-cert``; probes trust the
CA, so a renewed broker certificate needs no visit to any village).
"""

from __future__ import annotations

import ipaddress
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from coverwatch.errors import CoverwatchError

CA_DAYS = 3650
BROKER_DAYS = 825
CURVE = "prime256v1"


class CertificateError(CoverwatchError):
    """openssl is missing or refused; ``detail`` holds its message."""

    def __init__(self, message: str, detail: str = "") -> None:
        self.detail = detail
        super().__init__(f"{message}: {detail}" if detail else message)


def _openssl(args: Sequence[str], *, openssl: str | None = None) -> str:
    binary = openssl or shutil.which("openssl")
    if binary is None:
        raise CertificateError(
            "the openssl command is needed to make the broker's certificates",
            "install it (Debian: apt-get install openssl)",
        )
    result = subprocess.run([binary, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise CertificateError(f"openssl {args[0]} failed", result.stderr.strip())
    return result.stdout


def subject_alt_names(hosts: Sequence[str]) -> str:
    """``DNS:broker.example.org,IP:203.0.113.7`` for the given names and addresses."""
    entries = []
    for host in dict.fromkeys(hosts):  # unique, in order
        try:
            ipaddress.ip_address(host)
        except ValueError:
            entries.append(f"DNS:{host}")
        else:
            entries.append(f"IP:{host}")
    return ",".join(entries)


def make_ca(directory: Path, *, common_name: str = "coverwatch broker CA") -> tuple[Path, Path]:
    """``ca.crt`` and ``ca.key`` (mode 600) in ``directory``."""
    certificate, key = directory / "ca.crt", directory / "ca.key"
    _openssl(
        [
            "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", f"ec_paramgen_curve:{CURVE}",
            "-nodes", "-keyout", str(key), "-out", str(certificate),
            "-days", str(CA_DAYS), "-subj", f"/CN={common_name}",
            "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ]
    )  # fmt: skip
    key.chmod(0o600)
    certificate.chmod(0o644)
    return certificate, key


def make_broker_certificate(
    directory: Path, hosts: Sequence[str], *, ca_certificate: Path, ca_key: Path
) -> tuple[Path, Path]:
    """``broker.crt`` and ``broker.key`` (mode 600) signed by the CA, valid for ``hosts``."""
    if not hosts:
        raise ValueError("the broker certificate needs at least one host name")
    certificate, key = directory / "broker.crt", directory / "broker.key"
    with tempfile.TemporaryDirectory() as work:
        request = Path(work) / "broker.csr"
        extensions = Path(work) / "broker.ext"
        extensions.write_text(
            "\n".join(
                [
                    "basicConstraints=critical,CA:FALSE",
                    "keyUsage=critical,digitalSignature,keyEncipherment",
                    "extendedKeyUsage=serverAuth",
                    f"subjectAltName={subject_alt_names(hosts)}",
                    "subjectKeyIdentifier=hash",
                    "authorityKeyIdentifier=keyid,issuer",
                    "",
                ]
            )
        )
        _openssl(
            [
                "req", "-new", "-newkey", "ec", "-pkeyopt", f"ec_paramgen_curve:{CURVE}",
                "-nodes", "-keyout", str(key), "-out", str(request), "-subj", f"/CN={hosts[0]}",
            ]
        )  # fmt: skip
        _openssl(
            [
                "x509", "-req", "-in", str(request), "-CA", str(ca_certificate),
                "-CAkey", str(ca_key), "-set_serial", f"0x{secrets.token_hex(16)}",
                "-days", str(BROKER_DAYS), "-extfile", str(extensions), "-out", str(certificate),
            ]
        )  # fmt: skip
    key.chmod(0o600)
    certificate.chmod(0o644)
    return certificate, key


def certificate_text(certificate: Path) -> str:
    """openssl's human-readable dump of a certificate (for tests and the README)."""
    return _openssl(["x509", "-in", str(certificate), "-noout", "-text"])
