"""HTTPS by default: a certificate authority of the service's own and a server
certificate it signs, made on first start and kept in the data directory.

The bosh CLI speaks HTTPS only and checks the subjectAltName, so the server
certificate names every address it is reached by (127.0.0.1, localhost, the
host name, `tls.names`). Clients trust `ca.pem`; the CA's key stays beside it
(mode 0600) so a later start can add names without changing what clients trust.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT, CA_KEY = "ca.pem", "ca-key.pem"
SERVER_CERT, SERVER_KEY = "server.pem", "server-key.pem"
CA_DAYS, SERVER_DAYS = 3650, 825  # 825: the longest validity clients (macOS) still accept
RENEW_BEFORE = datetime.timedelta(days=30)


@dataclass(frozen=True)
class ServerCertificate:
    cert: Path
    key: Path
    ca: Path


def default_names(host: str, extra: Iterable[str] = ()) -> list[str]:
    """The names a client may use: loopback, the host name, the bind address, and configured ones."""
    names = ["127.0.0.1", "localhost", socket.gethostname()]
    if host not in ("", "0.0.0.0", "::"):
        names.append(host)
    names.extend(extra)
    return list(dict.fromkeys(n for n in names if n))


def ensure_certificate(data_dir: Path, names: list[str]) -> ServerCertificate:
    """The CA (made once) and a server certificate covering `names` (remade when
    names are missing or it nears expiry)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    ca_cert_path, ca_key_path = data_dir / CA_CERT, data_dir / CA_KEY
    if ca_cert_path.exists() and ca_key_path.exists():
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    else:
        ca_key, ca_cert = _make_ca()
        _write(ca_key_path, _key_pem(ca_key), private=True)
        _write(ca_cert_path, ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path, key_path = data_dir / SERVER_CERT, data_dir / SERVER_KEY
    if not (key_path.exists() and cert_path.exists() and _covers(cert_path, ca_cert, names)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _make_server(key, ca_key, ca_cert, names)
        _write(key_path, _key_pem(key), private=True)
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return ServerCertificate(cert=cert_path, key=key_path, ca=ca_cert_path)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _make_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"snapledger CA {socket.gethostname()}")])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def _san(names: list[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return entries


def _issuer_key(ca_cert: x509.Certificate) -> CertificateIssuerPublicKeyTypes:
    """The CA's public key, which signs certificates (a key exchange-only key, X25519 and the like, cannot)."""
    return cast(CertificateIssuerPublicKeyTypes, ca_cert.public_key())


def _make_server(key: ec.EllipticCurvePrivateKey, ca_key: object, ca_cert: x509.Certificate,
                 names: list[str]) -> x509.Certificate:
    now = _now()
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
            .add_extension(x509.SubjectAlternativeName(_san(names)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(_issuer_key(ca_cert)),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]


def _covers(cert_path: Path, ca_cert: x509.Certificate, names: list[str]) -> bool:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if cert.issuer != ca_cert.subject or cert.not_valid_after_utc - RENEW_BEFORE < _now():
        return False
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    have = {str(v) for v in san.get_values_for_type(x509.DNSName)} | {
        str(v) for v in san.get_values_for_type(x509.IPAddress)}
    return all(str(g.value) in have for g in _san(names))


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, private: bool = False) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
