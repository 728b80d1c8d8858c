"""Provisioning: the federation CA, TLS certificates, Ed25519 signing keys and startup kits.

``provision(config, out)`` writes::

    <out>/ca/                 ca.pem, ca_key.pem (0600; the CA key never leaves this folder)
    <out>/coordinator/        ca.pem cert.pem key.pem signing_key.pem federation.toml
                              roster.json kit.json
    <out>/keyholder/          ... the same + keyholder_passphrase (0600, unlocks the CKKS key)
    <out>/sites/<site_id>/    ... the same for every site

Folders are 0700, private files (``*key*.pem``, the passphrase) 0600, public files 0644.
TLS keys are ECDSA P-256; certificates chain to the federation CA. Server certificates
(coordinator, key holder) carry SANs for their role name, ``localhost``, ``127.0.0.1`` and
the host of their configured address, and both serverAuth and clientAuth (the coordinator
is the key holder's client). Site certificates carry the site id as common name and SAN
and clientAuth only. ``roster.json`` lists every party's Ed25519 verify key (hex) and
certificate fingerprint (SHA-256 of DER, hex).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import logging
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cipherfed.config import FederationConfig, dumps_config, load_config

logger = logging.getLogger(__name__)

Role = Literal["coordinator", "keyholder", "site"]
RESERVED_NAMES = frozenset({"ca", "coordinator", "keyholder"})
PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644
DIR_MODE = 0o700
KIT_FORMAT = 1
ROSTER_FORMAT = 1
PASSPHRASE_FILE = "keyholder_passphrase"


class ProvisioningError(Exception):
    """Provisioning cannot proceed (existing output, bad names) or a kit is invalid."""


# ---------------------------------------------------------------------------- files


def _mkdir(path: Path) -> None:
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` exclusively with ``mode`` (umask ignored), write, fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def check_private_file(path: Path) -> None:
    """Refuse a private file that group or others can read or write."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ProvisioningError(
            f"{path}: private file has mode {mode:04o}; it must not be accessible by group "
            f"or others (chmod 600 {path})"
        )


# ---------------------------------------------------------------------------- keys and certs


def _pem_private(key: ec.EllipticCurvePrivateKey | Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, federation_id: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"CipherFed {federation_id}"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


@dataclass(frozen=True)
class CertificateAuthority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, federation_id: str, days: int, now: dt.datetime) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = _name(f"CipherFed CA {federation_id}", federation_id)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def issue(
        self,
        common_name: str,
        federation_id: str,
        *,
        dns_names: list[str],
        ip_addresses: list[str],
        server: bool,
        days: int,
        now: dt.datetime,
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if server:
            usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dict.fromkeys(dns_names)]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in dict.fromkeys(ip_addresses)]
        ca_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, federation_id))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False
            )
            .sign(self.key, hashes.SHA256())
        )
        return key, cert


def cert_fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


# ---------------------------------------------------------------------------- roster


@dataclass(frozen=True)
class RosterEntry:
    verify_key: bytes  # raw 32-byte Ed25519 public key
    cert_fingerprint: str  # hex SHA-256 of the certificate's DER encoding


@dataclass(frozen=True)
class Roster:
    """Who belongs to the federation: verify keys and certificate fingerprints."""

    federation_id: str
    ca_fingerprint: str
    coordinator: RosterEntry
    keyholder: RosterEntry
    sites: Mapping[str, RosterEntry]

    def to_json(self) -> str:
        def entry(e: RosterEntry) -> dict[str, str]:
            return {"verify_key": e.verify_key.hex(), "cert_fingerprint": e.cert_fingerprint}

        doc = {
            "format": ROSTER_FORMAT,
            "federation_id": self.federation_id,
            "ca_fingerprint": self.ca_fingerprint,
            "coordinator": entry(self.coordinator),
            "keyholder": entry(self.keyholder),
            "sites": {sid: entry(e) for sid, e in sorted(self.sites.items())},
        }
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "roster.json") -> Roster:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProvisioningError(f"{source}: not JSON: {exc}") from exc

        def entry(obj: object, where: str) -> RosterEntry:
            if not isinstance(obj, dict):
                raise ProvisioningError(f"{source}: {where} must be an object")
            vk, fp = obj.get("verify_key"), obj.get("cert_fingerprint")
            try:
                raw = bytes.fromhex(vk) if isinstance(vk, str) else b""
            except ValueError:
                raw = b""
            if len(raw) != 32:
                raise ProvisioningError(f"{source}: {where}.verify_key must be 64 hex digits")
            Ed25519PublicKey.from_public_bytes(raw)
            if not isinstance(fp, str) or len(fp) != 64:
                raise ProvisioningError(f"{source}: {where}.cert_fingerprint must be 64 hex digits")
            return RosterEntry(raw, fp)

        if not isinstance(doc, dict) or doc.get("format") != ROSTER_FORMAT:
            raise ProvisioningError(f"{source}: not a CipherFed roster (format {ROSTER_FORMAT})")
        sites = doc.get("sites")
        if not isinstance(sites, dict):
            raise ProvisioningError(f"{source}: sites must be an object")
        fed, ca_fp = doc.get("federation_id"), doc.get("ca_fingerprint")
        if not isinstance(fed, str) or not isinstance(ca_fp, str):
            raise ProvisioningError(f"{source}: federation_id and ca_fingerprint are required")
        return cls(
            federation_id=fed,
            ca_fingerprint=ca_fp,
            coordinator=entry(doc.get("coordinator"), "coordinator"),
            keyholder=entry(doc.get("keyholder"), "keyholder"),
            sites={sid: entry(e, f"sites.{sid}") for sid, e in sites.items()},
        )


# ---------------------------------------------------------------------------- provision


@dataclass(frozen=True)
class ProvisionResult:
    out: Path
    ca_dir: Path
    coordinator_kit: Path
    keyholder_kit: Path
    site_kits: Mapping[str, Path]
    roster: Roster


def _host_of(address: str) -> str:
    return address.rpartition(":")[0].strip("[]")


def _split_host(host: str) -> tuple[list[str], list[str]]:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return [host], []
    return [], [host]


def provision(
    config: FederationConfig,
    out: str | os.PathLike[str],
    *,
    days: int = 365,
    now: dt.datetime | None = None,
) -> ProvisionResult:
    """Create the CA, every certificate and key, and one startup kit per party under ``out``."""
    out_dir = Path(out)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ProvisioningError(f"{out_dir}: output folder is not empty; refusing to overwrite")
    for sid in config.site_ids:
        if sid.lower() in RESERVED_NAMES:
            raise ProvisioningError(f"site id {sid!r} is reserved (ca, coordinator, keyholder)")
    when = now or dt.datetime.now(dt.UTC)
    fed = config.federation.id
    _mkdir(out_dir)
    ca = CertificateAuthority.create(fed, days, when)
    ca_pem = ca.cert.public_bytes(serialization.Encoding.PEM)
    ca_dir = out_dir / "ca"
    _mkdir(ca_dir)
    write_file(ca_dir / "ca.pem", ca_pem, PUBLIC_MODE)
    write_file(ca_dir / "ca_key.pem", _pem_private(ca.key), PRIVATE_MODE)

    parties: list[tuple[Role, str, Path, list[str], list[str], bool]] = []
    servers: tuple[tuple[Role, str], ...] = (
        ("coordinator", config.network.coordinator),
        ("keyholder", config.network.keyholder),
    )
    for role, address in servers:
        dns, ips = _split_host(_host_of(address))
        parties.append(
            (role, role, out_dir / role, [role, "localhost", *dns], ["127.0.0.1", *ips], True)
        )
    for sid in config.site_ids:
        parties.append(("site", sid, out_dir / "sites" / sid, [sid], [], False))

    entries: dict[str, RosterEntry] = {}
    signing_pems: dict[str, bytes] = {}
    certs: dict[str, tuple[bytes, bytes]] = {}
    for role, name, _kit, dns_names, ips, server in parties:
        tls_key, cert = ca.issue(
            name, fed, dns_names=dns_names, ip_addresses=ips, server=server, days=days, now=when
        )
        signing = Ed25519PrivateKey.generate()
        entries[name] = RosterEntry(signing.public_key().public_bytes_raw(), cert_fingerprint(cert))
        signing_pems[name] = _pem_private(signing)
        certs[name] = (cert.public_bytes(serialization.Encoding.PEM), _pem_private(tls_key))
        logger.debug("issued %s certificate for %s", role, name)

    roster = Roster(
        federation_id=fed,
        ca_fingerprint=cert_fingerprint(ca.cert),
        coordinator=entries["coordinator"],
        keyholder=entries["keyholder"],
        sites={sid: entries[sid] for sid in config.site_ids},
    )
    roster_json = roster.to_json().encode()
    federation_toml = dumps_config(config).encode()
    kits: dict[str, Path] = {}
    for role, name, kit, *_ in parties:
        _mkdir(kit)
        cert_pem, key_pem = certs[name]
        write_file(kit / "ca.pem", ca_pem, PUBLIC_MODE)
        write_file(kit / "cert.pem", cert_pem, PUBLIC_MODE)
        write_file(kit / "key.pem", key_pem, PRIVATE_MODE)
        write_file(kit / "signing_key.pem", signing_pems[name], PRIVATE_MODE)
        write_file(kit / "federation.toml", federation_toml, PUBLIC_MODE)
        write_file(kit / "roster.json", roster_json, PUBLIC_MODE)
        manifest = {"format": KIT_FORMAT, "role": role, "name": name, "federation_id": fed}
        write_file(kit / "kit.json", (json.dumps(manifest, indent=2) + "\n").encode(), PUBLIC_MODE)
        if role == "keyholder":
            passphrase = secrets.token_hex(32).encode() + b"\n"
            write_file(kit / PASSPHRASE_FILE, passphrase, PRIVATE_MODE)
        kits[name] = kit
    os.chmod(out_dir / "sites", DIR_MODE)
    logger.info("provisioned federation %s: %d sites into %s", fed, len(config.sites), out_dir)
    return ProvisionResult(
        out=out_dir,
        ca_dir=ca_dir,
        coordinator_kit=kits["coordinator"],
        keyholder_kit=kits["keyholder"],
        site_kits={sid: kits[sid] for sid in config.site_ids},
        roster=roster,
    )


# ---------------------------------------------------------------------------- kits


@dataclass(frozen=True)
class Kit:
    """A loaded startup kit: who we are, the federation, the roster and the key files."""

    path: Path
    role: Role
    name: str
    config: FederationConfig
    roster: Roster

    @property
    def ca_pem(self) -> Path:
        return self.path / "ca.pem"

    @property
    def cert_pem(self) -> Path:
        return self.path / "cert.pem"

    @property
    def key_pem(self) -> Path:
        return self.path / "key.pem"

    @property
    def signing_key_pem(self) -> Path:
        return self.path / "signing_key.pem"

    @property
    def passphrase_file(self) -> Path:
        return self.path / PASSPHRASE_FILE

    def signing_key_bytes(self) -> bytes:
        """The PEM of this party's Ed25519 signing key (PKCS#8, unencrypted)."""
        return self.signing_key_pem.read_bytes()


def load_kit(path: str | os.PathLike[str], expect_role: Role | None = None) -> Kit:
    """Read and check a startup kit (manifest, federation file, roster, private-file modes)."""
    kit = Path(path)
    manifest_path = kit / "kit.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except OSError as exc:
        raise ProvisioningError(f"{manifest_path}: cannot read kit manifest: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ProvisioningError(f"{manifest_path}: not JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != KIT_FORMAT:
        raise ProvisioningError(f"{manifest_path}: not a CipherFed kit manifest")
    role, name = manifest.get("role"), manifest.get("name")
    if role not in ("coordinator", "keyholder", "site") or not isinstance(name, str):
        raise ProvisioningError(f"{manifest_path}: role/name missing or invalid")
    if expect_role is not None and role != expect_role:
        raise ProvisioningError(f"{kit}: this is a {role} kit, expected a {expect_role} kit")
    for required in ("ca.pem", "cert.pem", "key.pem", "signing_key.pem", "roster.json"):
        if not (kit / required).is_file():
            raise ProvisioningError(f"{kit}: missing {required}")
    for private in ("key.pem", "signing_key.pem"):
        check_private_file(kit / private)
    config = load_config(kit / "federation.toml")
    roster = Roster.from_json((kit / "roster.json").read_text(), str(kit / "roster.json"))
    if (
        roster.federation_id != config.federation.id
        or manifest.get("federation_id") != roster.federation_id
    ):
        raise ProvisioningError(
            f"{kit}: kit, roster and federation file name different federations"
        )
    if role == "site" and name not in roster.sites:
        raise ProvisioningError(f"{kit}: site {name!r} is not in the roster")
    own = {"coordinator": roster.coordinator, "keyholder": roster.keyholder}.get(role)
    entry = own or roster.sites[name]
    _check_signing_key(kit / "signing_key.pem", entry, role)
    _check_certificate(kit / "ca.pem", roster.ca_fingerprint)
    _check_certificate(kit / "cert.pem", entry.cert_fingerprint)
    return Kit(path=kit, role=role, name=name, config=config, roster=roster)


def _check_signing_key(path: Path, entry: RosterEntry, role: str) -> None:
    """The kit's signing key parses and is the one the roster names for this party."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise ProvisioningError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    if not isinstance(key, Ed25519PrivateKey) or key.public_key().public_bytes(*raw) != (
        entry.verify_key
    ):
        raise ProvisioningError(f"{path}: not the Ed25519 key the roster names for this {role}")


def _check_certificate(path: Path, fingerprint: str) -> None:
    """The kit's certificate parses and is the one the roster names (else TLS would only
    fail later, as a connection retried for ever)."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as exc:
        raise ProvisioningError(f"{path}: not a PEM certificate ({exc})") from None
    if cert_fingerprint(cert) != fingerprint:
        raise ProvisioningError(f"{path}: not the certificate the roster names")


def read_passphrase(kit: Kit, passphrase_file: str | os.PathLike[str] | None = None) -> bytes:
    """The key holder's at-rest passphrase: ``passphrase_file``, else the env variable
    ``CIPHERFED_KEYHOLDER_PASSPHRASE``, else the kit's ``keyholder_passphrase`` (0600)."""
    if passphrase_file is None:
        env = os.environ.get("CIPHERFED_KEYHOLDER_PASSPHRASE")
        if env:
            return env.encode()
        path = kit.passphrase_file
    else:
        path = Path(passphrase_file)
    if not path.is_file():
        raise ProvisioningError(f"{path}: passphrase file not found")
    check_private_file(path)
    value = path.read_bytes().strip()
    if len(value) < 16:
        raise ProvisioningError(f"{path}: passphrase shorter than 16 bytes")
    return value
