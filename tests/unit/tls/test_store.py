"""``CertificateStore``: the certificate each SNI name gets (exact, then the one-label wildcard,
then the default certificate or a rejection), and reloading changed files on the store's own
schedule. Handshakes are real, over memory BIOs (``tests.support.tls.memory_handshake``)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from portway.config.tls import AcmeConfig, ListenerTlsConfig
from portway.pki import MaterialError
from portway.tls.store import CertificateStore
from tests.support.tls import (
    Issued,
    Pki,
    client_context,
    key_pem,
    memory_handshake,
    peer_certificate,
    replace_file,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def certs(pki: Pki) -> dict[str, Issued]:
    return {
        "first": pki.issue("first.example.com"),
        "www": pki.issue("www.example.com", "example.com"),
        "wild": pki.issue("*.w.example.com"),
        "exact_in_wild": pki.issue("a.w.example.com"),
    }


def store_for(
    certificates: list[dict[str, Any]], acme: AcmeConfig | None = None, **policy: Any
) -> CertificateStore:
    config = ListenerTlsConfig.model_validate({"certificates": certificates, **policy})
    return CertificateStore("test", config, acme or AcmeConfig())


def position(store: CertificateStore, host: str | None) -> int | None:
    chosen = store.select(host)
    return None if chosen is None else chosen.position


@pytest.fixture(scope="module")
def store(certs: dict[str, Issued]) -> CertificateStore:
    # The wildcard is listed before the exact name it also covers: exact still wins.
    return store_for(
        [
            certs["first"].files(),
            certs["www"].files(),
            certs["wild"].files(),
            certs["exact_in_wild"].files(),
        ]
    )


def test_exact_name_first(store: CertificateStore) -> None:
    """RFC 6066 §3: the server picks its certificate by the HostName the client sent."""
    assert position(store, "www.example.com") == 1
    assert position(store, "example.com") == 1  # every DNS name of the certificate is served
    assert position(store, "a.w.example.com") == 3  # exact beats the wildcard listed earlier


def test_one_label_wildcard(store: CertificateStore) -> None:
    """RFC 6125 §6.4.3: ``*.w.example.com`` covers exactly one label."""
    assert position(store, "b.w.example.com") == 2
    assert position(store, "a.b.w.example.com") == 0  # two labels: the default
    assert position(store, "w.example.com") == 0  # no label: the default


def test_no_name_and_unknown_names_get_the_first_certificate(store: CertificateStore) -> None:
    assert position(store, None) == 0
    assert position(store, "") == 0
    assert position(store, "unknown.example.org") == 0


def test_default_certificate_names_a_later_one(certs: dict[str, Issued]) -> None:
    store = store_for(
        [certs["first"].files(), certs["www"].files()], default_certificate="www.example.com"
    )
    assert position(store, None) == 1
    assert position(store, "nope.example.org") == 1
    assert position(store, "first.example.com") == 0
    assert [d["default"] for d in store.describe()] == [False, True]


def test_default_certificate_may_be_a_wildcard(certs: dict[str, Issued]) -> None:
    store = store_for(
        [certs["first"].files(), certs["wild"].files()], default_certificate="*.w.example.com"
    )
    assert position(store, None) == 1


def test_reject_unknown_names_but_not_a_missing_one(certs: dict[str, Issued]) -> None:
    store = store_for([certs["first"].files(), certs["wild"].files()], unknown_sni="reject")
    assert store.select("nope.example.org") is None
    assert store.select("a.b.w.example.com") is None
    assert position(store, "x.w.example.com") == 1
    assert position(store, None) == 0  # no SNI at all: the default certificate


def test_hosts_narrow_what_a_certificate_serves(certs: dict[str, Issued]) -> None:
    store = store_for([certs["first"].files(), {**certs["www"].files(), "hosts": ["example.com"]}])
    assert position(store, "example.com") == 1
    assert position(store, "www.example.com") == 0  # a name of the cert, but not in its hosts
    assert store.describe()[1]["hosts"] == ["example.com"]
    assert store.describe()[1]["names"] == ["www.example.com", "example.com"]


def test_describe(store: CertificateStore, certs: dict[str, Issued]) -> None:
    described = store.describe()
    assert [d["position"] for d in described] == [0, 1, 2, 3]
    first = described[0]
    assert first["listener"] == "test"
    assert first["fingerprint_sha256"] == certs["first"].fingerprint
    assert first["source"] == str(certs["first"].cert_file)
    assert first["client_auth"] is None and first["reload_error"] is None
    assert first["default"] is True


def test_material_that_cannot_be_served_fails_the_store(certs: dict[str, Issued], pki: Pki) -> None:
    old = pki.expired("old.example.com")
    with pytest.raises(MaterialError, match="expired on"):
        store_for([certs["first"].files(), old.files()])


def test_acme_certificate_without_files_serves_a_placeholder(tmp_path: Path) -> None:
    acme = AcmeConfig(state_dir=str(tmp_path))
    store = store_for([{"acme": True, "hosts": ["acme.example.com"]}], acme=acme)
    (described,) = store.describe()
    assert described["source"] == "acme"
    assert described["names"] == ["acme.example.com"]
    assert described["subject"] == described["issuer"] == "CN=acme.example.com"


# -- the SNI callback, in a real handshake --------------------------------------------------------


@pytest.mark.parametrize(
    ("sni", "expected"),
    [
        ("www.example.com", "www"),
        ("WWW.Example.COM", "www"),  # DNS names compare case-insensitively (RFC 4343)
        ("b.w.example.com", "wild"),
        ("a.b.w.example.com", "first"),
        (None, "first"),
    ],
)
def test_handshake_serves_the_selected_certificate(
    store: CertificateStore, certs: dict[str, Issued], sni: str | None, expected: str
) -> None:
    server, client = memory_handshake(store.base, client_context(check_hostname=False), sni)
    assert peer_certificate(client) == certs[expected].certificate
    served = getattr(server, "portway_served")  # noqa: B009  # set by the SNI callback
    assert served is store.select(sni.lower() if sni else None)


def test_handshake_for_a_rejected_name_fails(certs: dict[str, Issued]) -> None:
    """``unknown_sni: reject``: the handshake ends with an unrecognized_name alert (RFC 6066 §3)."""
    store = store_for([certs["first"].files()], unknown_sni="reject")
    with pytest.raises(ssl.SSLError) as caught:
        memory_handshake(store.base, client_context(check_hostname=False), "nope.example.org")
    assert caught.value.reason == "TLSV1_UNRECOGNIZED_NAME"  # the client's view of the alert


def test_ticket_keys_rotate(certs: dict[str, Issued]) -> None:
    """Session tickets are sealed with the base context's keys: a new base context every
    ``ticket_key_rotation`` makes tickets from two periods ago useless (a full handshake)."""
    store = store_for([certs["first"].files()], ticket_key_rotation=60)
    loop = asyncio.new_event_loop()
    try:
        store.tick(1000.0, loop)  # the first tick starts the period
        context = client_context(check_hostname=False)
        _, client = memory_handshake(store.base, context, "first.example.com")
        ticket = client.session
        _, again = memory_handshake(store.base, context, "first.example.com", ticket)
        assert again.session_reused  # same period
        store.tick(1059.0, loop)
        _, again = memory_handshake(store.base, context, "first.example.com", ticket)
        assert again.session_reused  # the period has not ended
        store.tick(1060.0, loop)
        store.tick(1120.0, loop)
        _, late = memory_handshake(store.base, context, "first.example.com", ticket)
        assert not late.session_reused
        assert peer_certificate(late) == certs["first"].certificate
    finally:
        loop.close()


# -- reloading -------------------------------------------------------------------------------------


class Reloads:
    """Drives a store's ``tick`` on a private event loop, with a clock the test advances."""

    def __init__(self, store: CertificateStore) -> None:
        self.store = store
        self.loop = asyncio.new_event_loop()
        self.now = 1000.0
        self.results: list[bool] = []
        store.on_reload = self.results.append
        store.tick(self.now, self.loop)  # the first tick schedules the checks

    def check(self) -> None:
        """Advance past ``reload_interval``, tick, and wait for the reload to finish."""
        self.now += self.store.policy.reload_interval + 0.001
        self.store.tick(self.now, self.loop)

        async def finished() -> None:
            for _ in range(500):
                if not self.store._loading:
                    return
                await asyncio.sleep(0.01)
            raise AssertionError("the reload did not finish in 5 s")

        self.loop.run_until_complete(finished())

    def close(self) -> None:
        self.loop.close()


@pytest.fixture
def rotating(pki: Pki, tmp_path: Path) -> Iterator[tuple[Reloads, Issued]]:
    """A store serving one certificate from files in ``tmp_path``, and its Reloads driver."""
    served = Pki(tmp_path, ca=pki.ca).issue("rot.example.com", file="served")
    reloads = Reloads(store_for([served.files()], reload_interval=0.5))
    yield reloads, served
    reloads.close()


def test_unchanged_files_are_not_reread(rotating: tuple[Reloads, Issued]) -> None:
    reloads, _ = rotating
    reloads.check()
    reloads.check()
    assert reloads.results == []


def test_changed_files_are_served(rotating: tuple[Reloads, Issued], pki: Pki) -> None:
    reloads, served = rotating
    store = reloads.store
    base_before = store.base
    new = Pki(served.cert_file.parent / "new", ca=pki.ca).issue("rot.example.com", file="new")
    replace_file(served.key_file, new.key_file.read_bytes())
    replace_file(served.cert_file, new.cert_file.read_bytes())
    reloads.check()
    assert reloads.results == [True]
    assert store.served[0].info.fingerprint_sha256 == new.fingerprint
    assert store.select("rot.example.com") is store.served[0]
    assert store.base is not base_before  # a new base context for the new default certificate
    _, client = memory_handshake(store.base, client_context(check_hostname=False), None)
    assert peer_certificate(client) == new.certificate


@pytest.mark.parametrize("damage", ["garbage", "other_key", "expired"])
def test_bad_files_keep_the_old_certificate(
    rotating: tuple[Reloads, Issued], pki: Pki, damage: str
) -> None:
    reloads, served = rotating
    store = reloads.store
    before, base_before = store.served[0], store.base
    if damage == "garbage":
        replace_file(served.cert_file, b"garbage\n")
        reason = f"cert_file {served.cert_file}: no PEM certificate in the file"
    elif damage == "other_key":
        replace_file(served.key_file, key_pem())
        reason = f"key_file {served.key_file}: the key does not match the certificate in"
    else:
        old = Pki(served.cert_file.parent / "old", ca=pki.ca).expired("rot.example.com")
        replace_file(served.key_file, old.key_file.read_bytes())
        replace_file(served.cert_file, old.cert_file.read_bytes())
        reason = f"cert_file {served.cert_file}: certificate {old.subject!r} expired on"
    reloads.check()
    assert reloads.results == [False]
    assert store.failures[0].startswith(reason)
    assert store.describe()[0]["reload_error"] == store.failures[0]
    assert store.served[0].context is before.context  # still serving the old one
    assert store.served[0].info == before.info
    assert store.base is base_before  # nor are session ticket keys replaced
    reloads.check()
    assert reloads.results == [False]  # the bad files are not read again until they change
    # Fixing the files serves them and clears the error.
    replace_file(served.cert_file, before.pair.chain_pem)
    replace_file(served.key_file, before.pair.key_pem)
    reloads.check()
    assert reloads.results == [False, True]
    assert store.failures == {}
    assert store.describe()[0]["reload_error"] is None
    assert store.served[0].info.fingerprint_sha256 == served.fingerprint


def finish(reloads: Reloads, results: Any) -> None:
    """Deliver a reload's results to the loop-side callback, as the executor's future would."""
    future: asyncio.Future[Any] = reloads.loop.create_future()
    future.set_result(results)
    reloads.store._reloaded(future)


def test_a_file_fixed_while_the_bad_one_was_read_is_read_again(
    rotating: tuple[Reloads, Issued],
) -> None:
    """The files' stamps are taken before reading them: a fix that lands between the read on the
    worker thread and the result on the loop is noticed at the next check, not lost."""
    reloads, served = rotating
    store = reloads.store
    good = served.cert_file.read_bytes()
    replace_file(served.cert_file, b"garbage\n")
    results = store._reload(list(store.served))  # the worker thread's part, here
    replace_file(served.cert_file, good)  # fixed before the result reaches the loop
    finish(reloads, results)
    assert reloads.results == [False]
    assert 0 in store.failures
    reloads.check()
    assert reloads.results == [False, True]
    assert store.failures == {}


def test_a_reload_result_older_than_the_config_is_dropped(
    rotating: tuple[Reloads, Issued], certs: dict[str, Issued]
) -> None:
    """A config reload (``configure``) while changed files are read: the result, read under the
    old config, must not replace what the new config serves at that position."""
    reloads, served = rotating
    store = reloads.store
    replace_file(served.key_file, served.key_file.read_bytes())  # changed: a new inode
    results = store._reload(list(store.served))
    policy = ListenerTlsConfig.model_validate(
        {"certificates": [certs["www"].files(), served.files()], "reload_interval": 0.5}
    )
    store.configure(policy, store.acme)
    finish(reloads, results)
    assert reloads.results == []
    assert [s.info.fingerprint_sha256 for s in store.served] == [
        certs["www"].fingerprint,
        served.fingerprint,
    ]
    assert store.select("rot.example.com") is store.served[1]
