"""Provisioning: files and modes, certificates chain to the CA with the right SANs, kits load."""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cipherfed.config import dumps_config, loads_config
from cipherfed.provisioning import (
    ProvisioningError,
    ProvisionResult,
    Roster,
    load_kit,
    provision,
    read_passphrase,
)
from crypto import SigningKey

ROOT = Path(__file__).resolve().parent.parent

# Run one cipherfed command in its own process without importing every other command
# (``cipherfed.cli`` loads them all; in-process tests cover its dispatch).
COMMAND_LAUNCHER = (
    "import argparse, importlib, logging, sys;"
    "m = importlib.import_module('cipherfed.commands.' + sys.argv[1]);"
    "p = argparse.ArgumentParser(); m.add_arguments(p);"
    "logging.basicConfig(level=logging.INFO);"
    "sys.exit(m.run(p.parse_args(sys.argv[2:])))"
)


def _parse(module: ModuleType, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


FED = """
[federation]
id = "prov-test"
min_participants = 2
rounds = 3
[network]
coordinator = "10.1.2.3:7000"
keyholder = "kh.example.org:7001"
[[sites]]
id = "site-a"
data = "actg175:0"
[[sites]]
id = "site-b"
data = "actg175:1"
"""
KIT_FILES = {
    "ca.pem": 0o644,
    "cert.pem": 0o644,
    "key.pem": 0o600,
    "signing_key.pem": 0o600,
    "federation.toml": 0o644,
    "roster.json": 0o644,
    "kit.json": 0o644,
}


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> ProvisionResult:
    return provision(loads_config(FED), tmp_path_factory.mktemp("p") / "fed")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_layout_and_modes(result: ProvisionResult) -> None:
    out = result.out
    assert _mode(out) == 0o700 and _mode(out / "ca") == 0o700 and _mode(out / "sites") == 0o700
    assert sorted(p.name for p in (out / "ca").iterdir()) == ["ca.pem", "ca_key.pem"]
    assert _mode(out / "ca" / "ca_key.pem") == 0o600
    kits = {
        "coordinator": result.coordinator_kit,
        "keyholder": result.keyholder_kit,
        **result.site_kits,
    }
    assert set(result.site_kits) == {"site-a", "site-b"}
    for name, kit in kits.items():
        assert _mode(kit) == 0o700, name
        expected = dict(KIT_FILES)
        if name == "keyholder":
            expected["keyholder_passphrase"] = 0o600
        assert sorted(p.name for p in kit.iterdir()) == sorted(expected), name
        for fname, mode in expected.items():
            assert _mode(kit / fname) == mode, (name, fname)
        # The CA private key never leaves <out>/ca.
        assert not (kit / "ca_key.pem").exists()
        ca_key = (out / "ca" / "ca_key.pem").read_bytes()
        assert all(ca_key not in (kit / f).read_bytes() for f in expected)


def test_certificates_chain_to_ca_with_sans(result: ProvisionResult) -> None:
    ca = _cert(result.ca_dir / "ca.pem")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    now = dt.datetime.now(dt.UTC)

    def check(kit: Path, cn: str) -> x509.Certificate:
        cert = _cert(kit / "cert.pem")
        cert.verify_directly_issued_by(ca)  # signature and issuer name
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == cn
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert cert.not_valid_before_utc <= now <= cert.not_valid_after_utc
        assert _cert(kit / "ca.pem") == ca
        return cert

    def sans(cert: x509.Certificate) -> tuple[list[str], list[str]]:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = ext.get_values_for_type(x509.DNSName)
        ips = [str(ip) for ip in ext.get_values_for_type(x509.IPAddress)]
        return dns, ips

    def ekus(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
        return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)

    coord = check(result.coordinator_kit, "coordinator")
    assert sans(coord) == (["coordinator", "localhost"], ["127.0.0.1", "10.1.2.3"])
    assert ekus(coord) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    kh = check(result.keyholder_kit, "keyholder")
    assert sans(kh) == (["keyholder", "localhost", "kh.example.org"], ["127.0.0.1"])
    for sid, kit in result.site_kits.items():
        cert = check(kit, sid)
        assert sans(cert) == ([sid], [])
        assert ekus(cert) == {ExtendedKeyUsageOID.CLIENT_AUTH}
        key = x509.load_pem_x509_certificate((kit / "cert.pem").read_bytes()).public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
    assert ipaddress.ip_address("10.1.2.3")


def test_roster_and_signing_keys(result: ProvisionResult) -> None:
    roster = Roster.from_json((result.coordinator_kit / "roster.json").read_text())
    assert roster == result.roster
    assert set(roster.sites) == {"site-a", "site-b"}
    for sid, kit in result.site_kits.items():
        key = SigningKey.from_pem((kit / "signing_key.pem").read_bytes())
        assert key.verify_key().to_bytes() == roster.sites[sid].verify_key
        kit_obj = load_kit(kit, expect_role="site")
        assert kit_obj.name == sid and kit_obj.role == "site"
        assert kit_obj.config == loads_config(FED)
    coord_key = SigningKey.from_pem((result.coordinator_kit / "signing_key.pem").read_bytes())
    assert coord_key.verify_key().to_bytes() == roster.coordinator.verify_key
    keys = {e.verify_key for e in [roster.coordinator, roster.keyholder, *roster.sites.values()]}
    assert len(keys) == 4  # every party has its own key
    assert len(read_passphrase(load_kit(result.keyholder_kit))) == 64


def test_kit_checks(result: ProvisionResult, tmp_path: Path) -> None:
    with pytest.raises(ProvisioningError, match="site kit, expected a coordinator kit"):
        load_kit(result.site_kits["site-a"], expect_role="coordinator")
    with pytest.raises(ProvisioningError, match="cannot read kit manifest"):
        load_kit(tmp_path)
    # A private key readable by others is refused.
    import shutil

    copy = tmp_path / "kit"
    shutil.copytree(result.site_kits["site-b"], copy)
    os.chmod(copy / "key.pem", 0o644)
    with pytest.raises(ProvisioningError, match="chmod 600"):
        load_kit(copy)
    os.chmod(copy / "key.pem", 0o600)
    (copy / "roster.json").write_text(json.dumps({"format": 1}))
    with pytest.raises(ProvisioningError, match="roster"):
        load_kit(copy)
    # A signing key that does not parse, or is another party's, is refused up front
    # (it was a ValueError traceback, or signatures every peer would reject).
    shutil.copy2(result.site_kits["site-b"] / "roster.json", copy / "roster.json")
    load_kit(copy)
    (copy / "signing_key.pem").write_text("junk\n")
    with pytest.raises(ProvisioningError, match=r"signing_key\.pem: not an unencrypted PEM"):
        load_kit(copy)
    shutil.copy2(result.site_kits["site-a"] / "signing_key.pem", copy / "signing_key.pem")
    with pytest.raises(ProvisioningError, match="not the Ed25519 key the roster names"):
        load_kit(copy)
    # Likewise a certificate that does not parse, or is another party's.
    shutil.copy2(result.site_kits["site-b"] / "signing_key.pem", copy / "signing_key.pem")
    (copy / "cert.pem").write_text("junk\n")
    with pytest.raises(ProvisioningError, match=r"cert\.pem: not a PEM certificate"):
        load_kit(copy)
    shutil.copy2(result.site_kits["site-a"] / "cert.pem", copy / "cert.pem")
    with pytest.raises(ProvisioningError, match=r"cert\.pem: not the certificate the roster"):
        load_kit(copy)
    shutil.copy2(result.coordinator_kit / "cert.pem", copy / "ca.pem")
    with pytest.raises(ProvisioningError, match=r"ca\.pem: not the certificate the roster"):
        load_kit(copy)


def test_refuses_nonempty_output_and_reserved_names(tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(ProvisioningError, match="not empty"):
        provision(loads_config(FED), tmp_path / "busy")
    reserved = FED.replace('id = "site-b"', 'id = "coordinator"')
    with pytest.raises(ProvisioningError, match="reserved"):
        provision(loads_config(reserved), tmp_path / "new")


def test_provision_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fed = tmp_path / "federation.toml"
    fed.write_text(dumps_config(loads_config(FED)))
    cmd = [sys.executable, "-c", COMMAND_LAUNCHER, "provision", str(fed), "--out"]
    done = subprocess.run([*cmd, str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "site site-a" in done.stdout
    assert load_kit(tmp_path / "out" / "sites" / "site-b").name == "site-b"
    # Failures, in-process (the CLI's exit code and message).
    from cipherfed.commands import provision as provision_cmd

    bad = tmp_path / "bad.toml"
    bad.write_text(FED.replace("min_participants = 2", "min_participants = 0"))
    args = _parse(provision_cmd, [str(bad), "--out", str(tmp_path / "o3")])
    assert provision_cmd.run(args) == 2
    assert "[federation].min_participants" in capsys.readouterr().err
    assert not (tmp_path / "o3").exists()
    args = _parse(provision_cmd, [str(fed), "--out", str(tmp_path / "out")])
    assert provision_cmd.run(args) == 2
    assert "not empty" in capsys.readouterr().err
    args = _parse(provision_cmd, [str(fed), "--out", str(tmp_path / "o4"), "--days", "0"])
    assert provision_cmd.run(args) == 2
    assert "--days" in capsys.readouterr().err
