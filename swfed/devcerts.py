"""``swfed admin dev-certs``: a private CA and server certificates for a homelab.

For trying federation on one machine or a LAN, where no public CA will
issue certificates: one CA (``ca.pem``, ``ca.key``) and, per server name,
``NAME.pem`` and ``NAME.key`` (the port of a name like ``a.localhost:8448``
is not part of a certificate, nor of the file names). A CA already in the
directory is reused, so a server added later is trusted by the peers and
browsers that trust the first ones. Keys are written 0600 whatever the
umask; nothing existing is overwritten but a server's own pair.

ECDSA P-256 keys; server certificates valid 825 days (the longest Apple's
platforms accept from any CA), with the name as subjectAltName (an IP
address as an IP entry) and serverAuth usage, as browsers require.
Trusting this CA in a browser trusts whatever it signs: keep ``ca.key``
private.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
SERVER_DAYS = 825


@attrs.frozen
class DevCerts:
    ca_cert: Path
    ca_key: Path
    ca_reused: bool
    servers: list[tuple[str, Path, Path]]  # (name, certfile, keyfile)


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)  # O_CREAT's mode does not apply to a file that existed


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _host(name: str) -> str:
    """``a.lan:8448`` -> ``a.lan``; ``[::1]:8448`` -> ``::1``."""
    if name.startswith("["):
        return name[1:].split("]", 1)[0]
    host, _, port = name.rpartition(":")
    return host if port.isdigit() and host and ":" not in host else name


def _ca(out: Path, now: datetime.datetime
        ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, bool]:
    cert_path, key_path = out / "ca.pem", out / "ca.key"
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey), "ca.key is not an EC key"
        return cert, key, True
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "swfed homelab CA"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "swfed dev-certs")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert, key, False


def make_dev_certs(names: list[str], out: Path) -> DevCerts:
    """Write the CA (unless there) and a certificate and key per name into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_cert, ca_key, reused = _ca(out, now)
    servers = []
    for name in names:
        host = _host(name)
        try:
            san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            san = x509.DNSName(host)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
                .issuer_name(ca_cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
                .add_extension(x509.SubjectAlternativeName([san]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                               critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    ca_key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA256()))
        file_name = host.replace(":", "_")
        cert_path, key_path = out / f"{file_name}.pem", out / f"{file_name}.key"
        _write(key_path, _key_pem(key), 0o600)
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        servers.append((name, cert_path, key_path))
    return DevCerts(out / "ca.pem", out / "ca.key", reused, servers)
