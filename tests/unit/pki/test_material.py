"""``portway.pki``: every reason a certificate or key is refused, each message naming the file."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from portway.pki import MaterialError, describe, load_ca_bundle, load_key_pair, self_signed
from tests.support.tls import Issued, Pki, fingerprint, key_pem


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def good(pki: Pki) -> Issued:
    return pki.issue("www.example.com", "API.example.com", file="good")


def refused(cert_file: Path | str, key_file: Path | str, now: dt.datetime | None = None) -> str:
    with pytest.raises(MaterialError) as caught:
        load_key_pair(str(cert_file), str(key_file), now)
    return str(caught.value)


def test_a_good_pair_is_described(good: Issued) -> None:
    pair = load_key_pair(str(good.cert_file), str(good.key_file))
    leaf = good.certificate
    assert pair.info.names == ("www.example.com", "api.example.com")  # SAN order, lower-case
    assert pair.info.subject == leaf.subject.rfc4514_string()
    assert pair.info.issuer == leaf.issuer.rfc4514_string()
    assert pair.info.serial == f"{leaf.serial_number:x}"
    assert pair.info.not_after == leaf.not_valid_after_utc
    assert pair.info.fingerprint_sha256 == good.fingerprint
    assert pair.chain_pem == good.cert_file.read_bytes()
    assert pair.key_pem == good.key_file.read_bytes()


def test_key_and_chain_in_one_file(good: Issued) -> None:
    pair = load_key_pair(str(good.pem_file), str(good.pem_file))
    assert pair.info.fingerprint_sha256 == good.fingerprint


def test_missing_file(tmp_path: Path, good: Issued) -> None:
    missing = tmp_path / "nowhere.pem"
    assert refused(missing, good.key_file) == f"cert_file {missing}: file not found"
    assert refused(good.cert_file, missing) == f"key_file {missing}: file not found"


def test_a_directory_is_not_a_file(tmp_path: Path, good: Issued) -> None:
    assert refused(tmp_path, good.key_file) == f"cert_file {tmp_path}: is a directory, not a file"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path: Path, good: Issued) -> None:
    locked = tmp_path / "locked.pem"
    locked.write_bytes(good.cert_file.read_bytes())
    locked.chmod(0)
    assert refused(locked, good.key_file) == f"cert_file {locked}: permission denied"


def test_garbage_is_no_pem_certificate(tmp_path: Path, good: Issued) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"this is not a certificate\n")
    assert refused(garbage, good.key_file) == f"cert_file {garbage}: no PEM certificate in the file"


def test_a_key_where_the_certificate_belongs(good: Issued) -> None:
    assert refused(good.key_file, good.key_file) == (
        f"cert_file {good.key_file}: no PEM certificate in the file"
    )


def test_a_corrupt_pem_block(tmp_path: Path, good: Issued) -> None:
    corrupt = tmp_path / "corrupt.pem"
    corrupt.write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    message = refused(corrupt, good.key_file)
    assert message.startswith(f"cert_file {corrupt}: not a valid PEM certificate (")


def test_garbage_key(tmp_path: Path, good: Issued) -> None:
    garbage = tmp_path / "garbage.key"
    garbage.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    message = refused(good.cert_file, garbage)
    assert message.startswith(f"key_file {garbage}: not a PEM private key (")


def test_encrypted_key(tmp_path: Path, good: Issued) -> None:
    key = serialization.load_pem_private_key(good.key_file.read_bytes(), None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    assert refused(good.cert_file, encrypted) == (
        f"key_file {encrypted}: the key is encrypted; Portway needs an unencrypted key"
    )


def test_key_that_does_not_match(tmp_path: Path, good: Issued) -> None:
    other = tmp_path / "other.key"
    other.write_bytes(key_pem())
    assert refused(good.cert_file, other) == (
        f"key_file {other}: the key does not match the certificate in {good.cert_file} "
        f"({good.subject!r})"
    )


def test_expired(pki: Pki) -> None:
    old = pki.expired("old.example.com")
    assert refused(old.cert_file, old.key_file) == (
        f"cert_file {old.cert_file}: certificate {old.subject!r} expired on 2020-12-31 00:00:00 UTC"
    )


def test_not_yet_valid(pki: Pki) -> None:
    future = pki.not_yet_valid("future.example.com")
    start = future.certificate.not_valid_before_utc
    assert refused(future.cert_file, future.key_file) == (
        f"cert_file {future.cert_file}: certificate {future.subject!r} is not valid before "
        f"{start:%Y-%m-%d %H:%M:%S} UTC"
    )


def test_validity_is_judged_at_now(good: Issued) -> None:
    after = good.certificate.not_valid_after_utc + dt.timedelta(seconds=1)
    assert "expired on" in refused(good.cert_file, good.key_file, now=after)


def test_an_intermediate_chain_loads(pki: Pki) -> None:
    intermediate = pki.ca.create_child_ca()
    leaf = pki.issue("chain.example.com", ca=intermediate)
    pair = load_key_pair(str(leaf.cert_file), str(leaf.key_file))
    assert len(x509.load_pem_x509_certificates(pair.chain_pem)) == 2
    assert pair.info.names == ("chain.example.com",)


def test_broken_chain_names_the_links(pki: Pki, tmp_path: Path) -> None:
    """The leaf followed by a CA that did not issue it (another root's intermediate)."""
    leaf = pki.issue("chain.example.com", ca=pki.ca.create_child_ca(), file="broken")
    stranger = Pki(tmp_path / "other").ca.create_child_ca()
    broken = tmp_path / "broken.crt"
    broken.write_bytes(leaf.cert_file.read_bytes().split(b"-----END CERTIFICATE-----")[0])
    with broken.open("ab") as file:
        file.write(b"-----END CERTIFICATE-----\n" + stranger.cert_pem.bytes())
    stranger_subject = x509.load_pem_x509_certificate(stranger.cert_pem.bytes()).subject
    assert refused(broken, leaf.key_file) == (
        f"cert_file {broken}: the chain is broken: certificate 1 ({leaf.subject!r}) is not issued "
        f"by certificate 2 ({stranger_subject.rfc4514_string()!r}); put the leaf first, then "
        "each issuer"
    )


def test_chain_in_the_wrong_order(pki: Pki, tmp_path: Path) -> None:
    leaf = pki.issue("order.example.com", ca=pki.ca.create_child_ca(), file="order")
    blocks = leaf.leaf.cert_chain_pems
    reordered = tmp_path / "reordered.crt"
    reordered.write_bytes(blocks[1].bytes() + blocks[0].bytes())
    # The intermediate is first, so the key is checked against it and does not match.
    message = refused(reordered, leaf.key_file)
    assert message.startswith(f"key_file {leaf.key_file}: the key does not match the certificate")
    # With the intermediate's key too it would load; the chain check is what refuses it.
    intermediate = Pki(tmp_path / "i").ca.create_child_ca()
    inter_leaf = intermediate.issue_cert("x.example.com")
    swapped = tmp_path / "swapped.crt"
    swapped.write_bytes(
        inter_leaf.cert_chain_pems[0].bytes() + blocks[1].bytes() + blocks[0].bytes()
    )
    swapped_key = tmp_path / "swapped.key"
    swapped_key.write_bytes(inter_leaf.private_key_pem.bytes())
    assert "the chain is broken: certificate 1" in refused(swapped, swapped_key)


def test_an_expired_certificate_in_the_chain_is_named(pki: Pki, tmp_path: Path) -> None:
    leaf = pki.issue("x.example.com", file="fresh")
    old = pki.expired("old-in-chain.example.com", file="old-in-chain")
    bundle = tmp_path / "bundle.crt"
    bundle.write_bytes(leaf.cert_file.read_bytes() + old.cert_file.read_bytes())
    message = refused(bundle, leaf.key_file)
    assert message == (
        f"cert_file {bundle}: certificate {old.subject!r} expired on 2020-12-31 00:00:00 UTC"
    )


def test_ca_bundle(pki: Pki, tmp_path: Path) -> None:
    assert [c.subject for c in load_ca_bundle(str(pki.ca_file))] == [
        x509.load_pem_x509_certificate(pki.ca.cert_pem.bytes()).subject
    ]
    garbage = tmp_path / "ca.pem"
    garbage.write_text("nope")
    with pytest.raises(MaterialError, match=re.escape(f"ca_file {garbage}: no PEM certificate")):
        load_ca_bundle(str(garbage))
    with pytest.raises(MaterialError, match=re.escape(f"client CA {tmp_path}/none.pem: file not")):
        load_ca_bundle(str(tmp_path / "none.pem"), what="client CA")


def test_names_fall_back_to_the_common_name(pki: Pki) -> None:
    """Without a SAN extension the CN is the name (what SNI selection and `hosts` compare)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Legacy.Example.com")])
    legacy = pki.issue_with([], subject=subject, file="legacy")
    assert describe(legacy.certificate).names == ("legacy.example.com",)


def test_sans_other_than_dns_are_not_names(pki: Pki) -> None:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cn.example.com")])
    cert = pki.issue_with(
        [x509.DNSName("dns.example.com"), x509.UniformResourceIdentifier("spiffe://x/y")],
        subject=subject,
        file="mixed",
    )
    assert describe(cert.certificate).names == ("dns.example.com",)  # SAN present: CN ignored


def test_self_signed_placeholder(tmp_path: Path) -> None:
    chain, key = self_signed(["acme.example.com", "www.acme.example.com"], days=10)
    cert_file, key_file = tmp_path / "c.pem", tmp_path / "k.pem"
    cert_file.write_bytes(chain)
    key_file.write_bytes(key)
    pair = load_key_pair(str(cert_file), str(key_file))
    assert pair.info.names == ("acme.example.com", "www.acme.example.com")
    assert pair.info.subject == pair.info.issuer == "CN=acme.example.com"
    assert 9 * 86400 < pair.info.seconds_left() <= 10 * 86400
    certificate = x509.load_pem_x509_certificate(chain)
    assert pair.info.fingerprint_sha256 == fingerprint(certificate)
    assert isinstance(certificate.public_key(), ec.EllipticCurvePublicKey)
