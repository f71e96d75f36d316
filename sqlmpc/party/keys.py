"""Development key material for a federation: a CA, one certificate per party, analyst tokens.

    sqlmpc keys init --federation fed.toml --out keys/

writes

    keys/ca.pem, keys/ca.key             the development CA (keep ca.key offline in real life)
    keys/<party>/cert.pem, key.pem       the party's certificate (server and client use) and key
    keys/<party>/ca.pem                  the CA certificate, to verify peers
    keys/tokens.json                     analyst name -> sha256 of the analyst's token (for nodes)
    keys/analysts/<name>.token           the analyst's bearer token (give it to the analyst only)

A party certificate names the party: its CN is the party name and its *first*
subjectAltName is the party name in lower case (the identity peers check:
:func:`sqlmpc.mpc.session.certificate_party`); further DNS names are the host of its federation
address and localhost / 127.0.0.1, so a loopback federation works.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _name(cn: str):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sqlmpc federation"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _write_cert(path: Path, cert) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _san(host: str, party: str):
    """The party's name first (gRPC's peer identity is a certificate's first subjectAltName), then
    the host of its address, localhost and the IP addresses."""
    names = {"localhost"}
    ips = {"127.0.0.1"}
    h = host.strip("[]")
    try:
        ipaddress.ip_address(h)
        ips.add(h)
    except ValueError:
        names.add(h)
    names.discard(party.lower())
    return x509.SubjectAlternativeName([x509.DNSName(n) for n in [party.lower(), *sorted(names)]]
                                       + [x509.IPAddress(ipaddress.ip_address(i)) for i in sorted(ips)])


def init_keys(federation, out: str | Path, analysts: list[str] | None = None, days: int = 365) -> dict:
    """Create the CA, party certificates and analyst tokens; returns {analyst: token}."""

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    not_before, not_after = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"{federation.name} development CA")
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))
    _write_key(out / "ca.key", ca_key)
    _write_cert(out / "ca.pem", ca_cert)

    for party in federation.parties:
        host = party.address.rpartition(":")[0]
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(_name(party.name)).issuer_name(ca_name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(not_before).not_valid_after(not_after)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(_san(host, party.name), critical=False)
                .sign(ca_key, hashes.SHA256()))
        pdir = out / party.name
        pdir.mkdir(exist_ok=True)
        _write_key(pdir / "key.pem", key)
        _write_cert(pdir / "cert.pem", cert)
        _write_cert(pdir / "ca.pem", ca_cert)

    if analysts is None:
        analysts = sorted(federation.policy.analysts) if federation.policy.analysts else ["analyst"]
    tokens = {name: secrets.token_urlsafe(32) for name in analysts}
    adir = out / "analysts"
    adir.mkdir(exist_ok=True)
    for name, token in tokens.items():
        path = adir / f"{name}.token"
        path.write_text(token + "\n")
        path.chmod(0o600)
    (out / "tokens.json").write_text(json.dumps({n: token_hash(t) for n, t in tokens.items()}, indent=2) + "\n")
    return tokens


def load_tokens(path: str | Path) -> dict[str, str]:
    """tokens.json: {analyst: sha256(token)} -> {sha256: analyst}."""
    data = json.loads(Path(path).read_text())
    return {h: name for name, h in data.items()}
