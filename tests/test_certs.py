"""`byoc-gateway certs ...`: CA, server and client certificates, show, file safety."""

from __future__ import annotations

import argparse
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from gateway.certs import create_ca, issue_client_cert, issue_server_cert, load_ca, show
from gateway.certscmd import add_commands, run_certs_command
from gateway.errors import ConfigError


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="byoc-gateway")
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_ca_server_and_client_certificates(tmp_path: Path) -> None:
    ca = create_ca(tmp_path, "Test CA", 30, key_type="ec")
    server = issue_server_cert(ca, ["gw.example.com", "203.0.113.7", "::1"], 10, key_type="ec")
    client = issue_client_cert(ca, "cxone", 20, password="s3cret-pass", p12=True, key_type="ec")

    assert mode(ca.key_path) == 0o600
    assert mode(server.key) == 0o600
    assert mode(client.key) == 0o600
    assert client.p12 is not None and mode(client.p12) == 0o600

    [info] = show(server.cert)
    assert info.subject == "CN=gw.example.com"
    assert info.sans == ("DNS:gw.example.com", "IP:203.0.113.7", "IP:::1")
    assert info.issuer == "CN=Test CA"
    assert 9.9 < info.days_left <= 10.01
    assert len(info.fingerprint_sha256.split(":")) == 32

    cert = x509.load_pem_x509_certificate(server.cert.read_bytes())
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in eku
    client_cert = x509.load_pem_x509_certificate(client.cert.read_bytes())
    eku = client_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH in eku
    # both chain to the CA
    cert.verify_directly_issued_by(ca.cert)
    client_cert.verify_directly_issued_by(ca.cert)


def test_client_key_is_encrypted_with_the_password(tmp_path: Path) -> None:
    ca = create_ca(tmp_path, "Test CA", 30, key_type="ec")
    files = issue_client_cert(ca, "cxone", 20, password="s3cret-pass", p12=True, key_type="ec")
    pem = files.key.read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(pem, None)
    serialization.load_pem_private_key(pem, b"s3cret-pass")
    assert files.p12 is not None
    bundle = pkcs12.load_pkcs12(files.p12.read_bytes(), b"s3cret-pass")
    assert bundle.cert is not None and bundle.key is not None
    assert [c.certificate for c in bundle.additional_certs] == [ca.cert]
    [leaf, ca_in_bundle] = show(files.p12, "s3cret-pass")
    assert leaf.subject == "CN=cxone" and ca_in_bundle.subject == "CN=Test CA"


def test_pkcs12_needs_a_password(tmp_path: Path) -> None:
    ca = create_ca(tmp_path, "Test CA", 30, key_type="ec")
    with pytest.raises(ConfigError, match="PKCS#12 bundle needs a password"):
        issue_client_cert(ca, "cxone", 20, password=None, p12=True)
    assert not (tmp_path / "client.key").exists()


def test_nothing_is_overwritten_without_force(tmp_path: Path) -> None:
    ca = create_ca(tmp_path, "Test CA", 30, key_type="ec")
    first = issue_server_cert(ca, ["gw.example.com"], 10, key_type="ec")
    before = first.key.read_bytes()
    with pytest.raises(ConfigError, match="pass --force"):
        issue_server_cert(ca, ["gw.example.com"], 10, key_type="ec")
    assert first.key.read_bytes() == before
    with pytest.raises(ConfigError, match="pass --force"):
        create_ca(tmp_path, "Other CA", 30, key_type="ec")

    first.key.chmod(0o644)  # even a loosened file comes back 0600
    issue_server_cert(ca, ["gw.example.com"], 10, key_type="ec", force=True)
    assert first.key.read_bytes() != before
    assert mode(first.key) == 0o600


def test_bad_names_and_days_are_refused(tmp_path: Path) -> None:
    ca = create_ca(tmp_path, "Test CA", 30, key_type="ec")
    with pytest.raises(ConfigError, match="not a DNS name"):
        issue_server_cert(ca, ["bad name!"], 10)
    with pytest.raises(ConfigError, match="at least 1 day"):
        issue_server_cert(ca, ["gw.example.com"], 0)


def test_encrypted_ca_key_round_trip(tmp_path: Path) -> None:
    ca = create_ca(tmp_path, "Test CA", 30, key_type="ec", password="ca-pass-123")
    assert ca.key_path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(ConfigError, match="no key_password"):
        load_ca(ca.cert_path, ca.key_path)
    loaded = load_ca(ca.cert_path, ca.key_path, "ca-pass-123")
    assert loaded.cert == ca.cert
    server = issue_server_cert(ca, ["gw.example.com"], 5, key_type="ec")
    with pytest.raises(ConfigError, match="not a CA"):
        load_ca(server.cert, server.key)


def test_expired_certificates_can_be_made_for_tests(tmp_path: Path) -> None:
    ca = create_ca(tmp_path, "Test CA", 3650, key_type="ec")
    past = datetime.now(UTC) - timedelta(days=100)
    files = issue_client_cert(ca, "old", 30, key_type="ec", now=past)
    [info] = show(files.cert)
    assert info.days_left < -69


# --- the command line -------------------------------------------------------------------


def test_cli_flow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    d = str(tmp_path / "certs")
    assert run_certs_command(parse(["certs", "ca", "--dir", d, "--key-type", "ec"])) == 0
    assert (
        run_certs_command(
            parse(["certs", "server", "gw.example.com", "10.1.2.3", "--dir", d, "--key-type", "ec"])
        )
        == 0
    )
    monkeypatch.setenv("CLIENT_KEY_PASSWORD", "from-the-env-123")
    argv = ["certs", "client", "--dir", d, "--cn", "cxone", "--password-env", "CLIENT_KEY_PASSWORD"]
    assert run_certs_command(parse([*argv, "--p12", "--key-type", "ec"])) == 0
    out = capsys.readouterr().out
    assert "client.pem" in out and "client.key" in out and "client.p12" in out and "ca.pem" in out
    assert "client_subjects: [cxone]" in out
    assert "PRIVATE KEY" not in out  # never printed unless asked
    key = (tmp_path / "certs" / "client.key").read_bytes()
    serialization.load_pem_private_key(key, b"from-the-env-123")

    assert run_certs_command(parse(["certs", "show", f"{d}/server.pem"])) == 0
    out = capsys.readouterr().out
    assert "CN=gw.example.com" in out and "IP:10.1.2.3" in out and "sha256" in out
    assert run_certs_command(parse(["certs", "show", f"{d}/server.pem", "--warn-days", "400"])) == 1
    assert "expires in" in capsys.readouterr().err
    assert run_certs_command(parse(["certs", "show", f"{d}/server.pem", "--warn-days", "30"])) == 0


def test_cli_generated_password_and_print_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(tmp_path)
    run_certs_command(parse(["certs", "ca", "--dir", d, "--key-type", "ec"]))
    args = ["certs", "client", "--dir", d, "--generate-password", "--print-key", "--key-type", "ec"]
    assert run_certs_command(parse(args)) == 0
    out = capsys.readouterr().out
    password_file = tmp_path / "client.password"
    assert mode(password_file) == 0o600
    password = password_file.read_text().strip()
    assert password not in out  # the password stays in its file
    assert "-----BEGIN ENCRYPTED PRIVATE KEY-----" in out  # asked for with --print-key
    serialization.load_pem_private_key((tmp_path / "client.key").read_bytes(), password.encode())
    with pytest.raises(ConfigError, match="pass --force"):
        run_certs_command(parse(args))


def test_cli_missing_password_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_NOT_SET", raising=False)
    run_certs_command(parse(["certs", "ca", "--dir", str(tmp_path), "--key-type", "ec"]))
    with pytest.raises(ConfigError, match="NOPE_NOT_SET is not set"):
        run_certs_command(
            parse(["certs", "client", "--dir", str(tmp_path), "--password-env", "NOPE_NOT_SET"])
        )
