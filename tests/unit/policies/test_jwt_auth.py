"""Bearer JWTs (RFC 7519, RFC 6750): which tokens pass, what the 401s say, and the attacks that
must fail (alg none, algorithm confusion, unknown kid, forged signature)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pydantic import ValidationError
from typer.testing import CliRunner

from portway.cli import app
from portway.config.loader import load_config
from portway.config.policies import JwtConfig
from portway.errors import ConfigError, ConfigIssue
from portway.messages import LocalAnswer, Request
from portway.policies.base import EXPIRED, INVALID, MISSING
from portway.policies.jwt_auth import JwtPolicy
from tests.support.tls import Pki

SECRET = "s" * 32 + "-the-shared-hmac-secret-of-tests"  # 64 bytes: enough for HS512 too
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()
# What RFC 6750 §3 lets into error_description: %x20-21 / %x23-5B / %x5D-7E.
DESCRIPTION = re.compile(r"^[\x20\x21\x23-\x5b\x5d-\x7e]*$")


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice", "iat": now, "exp": now + 300, **extra}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unsigned(header: dict[str, Any], payload: dict[str, Any]) -> str:
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"


def bearer_request(token: str | None, header: str = "Authorization") -> Request:
    headers = [(header.encode(), token.encode("latin-1"))] if token is not None else []
    return Request("GET", "api.example.com", "/", headers=headers, client_ip="192.0.2.1")


def secret_policy(**overrides: Any) -> JwtPolicy:
    settings = {"algorithms": ["HS256"], "secret": SECRET, **overrides}
    return JwtPolicy("api", JwtConfig.model_validate(settings))


def check(policy: JwtPolicy, token: str | None, header: str = "Authorization") -> Request:
    """The request after the policy let it through."""
    request = bearer_request(token, header)
    assert policy.apply(request) is None
    return request


def refused(
    policy: JwtPolicy, token: str | None, cause: str = INVALID, header: str = "Authorization"
) -> str:
    """The error_description of a refusal (or "" for a bare challenge)."""
    answer = policy.apply(bearer_request(token, header))
    assert isinstance(answer, LocalAnswer)
    assert (answer.status, answer.cause) == (401, cause.encode())
    [(name, value)] = answer.headers
    assert name == b"www-authenticate"
    challenge = value.decode("ascii")
    if cause == MISSING:
        assert challenge == 'Bearer realm="api"'  # RFC 6750 §3.1: no error code
        return ""
    match = re.fullmatch(
        r'Bearer realm="api", error="invalid_token", error_description="([^"]*)"', challenge
    )
    assert match is not None, challenge
    assert DESCRIPTION.match(match.group(1))
    return match.group(1)


# -- with a shared secret --------------------------------------------------------------------------


def test_a_good_token_names_the_consumer() -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert check(secret_policy(), f"Bearer {token}").consumer == "alice"
    assert check(secret_policy(), f"bearer   {token}").consumer == "alice"  # scheme: any case


@pytest.mark.parametrize("value", [None, "", "Bearer", "Bearer  ", "Basic YWxpY2U6cHc="])
def test_no_bearer_token_gets_a_bare_challenge(value: str | None) -> None:
    refused(secret_policy(), value, MISSING)


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "only.two",  # two segments
        "a.b.c",
        "é.\xff.x",  # non-UTF-8 from the wire, decoded as latin-1
        "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.",  # payload is not JSON (signature checked first)
        "bm90IGpzb24.e30.c2ln",  # header is not JSON
    ],
)
def test_malformed_tokens_are_invalid(token: str) -> None:
    if token.endswith("."):
        mac = hmac.new(SECRET.encode(), token[:-1].encode(), hashlib.sha256).digest()
        token += b64url(mac)
    assert refused(secret_policy(), f"Bearer {token}") == "the token is malformed"


def test_a_wrong_signature_is_invalid() -> None:
    token = jwt.encode(claims(), "x" * 64, algorithm="HS256")
    assert refused(secret_policy(), f"Bearer {token}") == "the token's signature does not verify"
    header, _payload, signature = jwt.encode(claims(), SECRET, algorithm="HS256").split(".")
    forged = b64url(json.dumps(claims(sub="admin")).encode())
    assert "signature" in refused(secret_policy(), f"Bearer {header}.{forged}.{signature}")


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_refused(alg: str) -> None:
    token = unsigned({"alg": alg, "typ": "JWT"}, claims()) + "."
    assert refused(secret_policy(), f"Bearer {token}") == "the token's algorithm is not accepted"


def test_only_listed_algorithms_are_accepted() -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS512")
    assert "algorithm" in refused(secret_policy(), f"Bearer {token}")
    assert check(secret_policy(algorithms=["HS256", "HS512"]), f"Bearer {token}")


def test_expired_tokens_are_counted_apart_and_leeway_applies() -> None:
    now = int(time.time())
    late = jwt.encode(claims(exp=now - 10), SECRET, algorithm="HS256")
    assert check(secret_policy(leeway="30s"), f"Bearer {late}").consumer == "alice"
    description = refused(secret_policy(leeway=0), f"Bearer {late}", EXPIRED)
    assert description == "the token has expired"


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_tokens_from_the_future_are_not_valid_yet(claim: str) -> None:
    now = int(time.time())
    soon = jwt.encode(claims(**{claim: now + 10}), SECRET, algorithm="HS256")
    assert check(secret_policy(leeway="30s"), f"Bearer {soon}")
    later = jwt.encode(claims(**{claim: now + 120}), SECRET, algorithm="HS256")
    assert refused(secret_policy(), f"Bearer {later}") == "the token is not valid yet"


def test_issuer() -> None:
    policy = secret_policy(issuer="https://idp.example.com")
    good = jwt.encode(claims(iss="https://idp.example.com"), SECRET, algorithm="HS256")
    assert check(policy, f"Bearer {good}")
    bad = jwt.encode(claims(iss="https://evil.example.com"), SECRET, algorithm="HS256")
    assert refused(policy, f"Bearer {bad}") == "the token is from another issuer"
    assert refused(policy, f"Bearer {jwt.encode(claims(), SECRET)}") == "the token has no iss claim"


@pytest.mark.parametrize(
    ("aud", "accepted"),
    [("orders", True), (["billing", "orders"], True), ("billing", False), (["a", "b"], False)],
)
def test_audience_as_string_or_list(aud: str | list[str], accepted: bool) -> None:
    """RFC 7519 §4.1.3: ``aud`` is a string or an array; one of ours must be in it."""
    policy = secret_policy(audiences=["orders", "shipping"])
    token = jwt.encode(claims(aud=aud), SECRET, algorithm="HS256")
    if accepted:
        assert check(policy, f"Bearer {token}")
    else:
        assert refused(policy, f"Bearer {token}") == "the token is not for this audience"


def test_no_audiences_configured_accepts_any_aud_and_configured_needs_one() -> None:
    token = jwt.encode(claims(aud="whatever"), SECRET, algorithm="HS256")
    assert check(secret_policy(), f"Bearer {token}")
    plain = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert (
        refused(secret_policy(audiences=["x"]), f"Bearer {plain}") == "the token has no aud claim"
    )


def test_required_claims() -> None:
    no_exp = jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256")
    assert refused(secret_policy(), f"Bearer {no_exp}") == "the token has no exp claim"
    policy = secret_policy(required_claims=["exp", "jti"])
    assert refused(policy, f"Bearer {jwt.encode(claims(), SECRET)}") == "the token has no jti claim"
    assert check(secret_policy(required_claims=[]), f"Bearer {no_exp}")


@pytest.mark.parametrize(
    ("value", "consumer"),
    [("svc-1@tenant.example", "svc-1@tenant.example"), (42, "42"), ("has space", None),
     ("", None), ({"n": 1}, None), (True, None), ("x" * 129, None),
     ("alice\n", None), ("alice\r\nx-admin: 1", None), ("ålice", None)],
)  # fmt: skip
def test_consumer_claim(value: object, consumer: str | None) -> None:
    policy = secret_policy(consumer_claim="client_id")
    token = jwt.encode(claims(client_id=value), SECRET, algorithm="HS256")
    if consumer is not None:
        assert check(policy, f"Bearer {token}").consumer == consumer
    else:
        description = refused(policy, f"Bearer {token}")
        assert description == "consumer claim client_id is missing or not a valid name"


def test_another_header_takes_the_bare_token_and_strips_it() -> None:
    policy = secret_policy(header="X-Token", strip_credentials=True)
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert check(policy, token, header="x-token").consumer == "alice"
    assert check(policy, f"Bearer {token}", header="x-token")
    refused(policy, f"Bearer {token}", MISSING)  # in Authorization: not where it is looked for
    assert policy.drops() == {b"x-token"}
    assert secret_policy().drops() == frozenset()


# -- with a public key -----------------------------------------------------------------------------


@pytest.fixture
def key_policy(tmp_path: Path) -> JwtPolicy:
    path = tmp_path / "idp.pem"
    path.write_bytes(public_pem(RSA_KEY))
    return JwtPolicy(
        "api",
        JwtConfig(algorithms=["RS256", "PS256"], public_key_file=str(path)),
    )


@pytest.mark.parametrize("alg", ["RS256", "PS256"])
def test_rsa_signatures(key_policy: JwtPolicy, alg: str) -> None:
    assert check(key_policy, f"Bearer {jwt.encode(claims(), RSA_KEY, algorithm=alg)}")
    other = jwt.encode(claims(), OTHER_RSA_KEY, algorithm=alg)
    assert refused(key_policy, f"Bearer {other}") == "the token's signature does not verify"


def test_algorithm_confusion_is_refused(key_policy: JwtPolicy) -> None:
    """An HS256 token "signed" with the RSA public key's PEM as the HMAC secret."""
    signing_input = unsigned({"alg": "HS256", "typ": "JWT"}, claims(sub="admin"))
    mac = hmac.new(public_pem(RSA_KEY), signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64url(mac)}"
    assert refused(key_policy, f"Bearer {token}") == "the token's algorithm is not accepted"
    token = jwt.encode(claims(), EC_KEY, algorithm="ES256")  # not listed either
    assert refused(key_policy, f"Bearer {token}") == "the token's algorithm is not accepted"


# -- with a JWK set --------------------------------------------------------------------------------


def jwk(key: Any, **members: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(jwt.algorithms.get_default_algorithms()[
        "EdDSA" if isinstance(key, ed25519.Ed25519PrivateKey) else
        "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256"
    ].to_jwk(key.public_key()))  # fmt: skip
    return {**document, **members}


def jwks_policy(tmp_path: Path, keys: list[dict[str, Any]], algorithms: list[str]) -> JwtPolicy:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": keys}))
    return JwtPolicy("api", JwtConfig(algorithms=algorithms, jwks_file=str(path)))


def test_the_kid_picks_the_key(tmp_path: Path) -> None:
    policy = jwks_policy(
        tmp_path,
        [jwk(RSA_KEY, kid="r1"), jwk(EC_KEY, kid="e1"), jwk(ED_KEY, kid="d1")],
        ["RS256", "ES256", "EdDSA"],
    )
    signers: list[tuple[Any, str, str]] = [
        (RSA_KEY, "r1", "RS256"),
        (EC_KEY, "e1", "ES256"),
        (ED_KEY, "d1", "EdDSA"),
    ]
    for key, kid, alg in signers:
        token = jwt.encode(claims(), key, algorithm=alg, headers={"kid": kid})
        assert check(policy, f"Bearer {token}").consumer == "alice"
    unknown = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "r2"})
    assert refused(policy, f"Bearer {unknown}") == "the token's kid names no known key"
    no_kid = jwt.encode(claims(), RSA_KEY, algorithm="RS256")
    assert "no kid" in refused(policy, f"Bearer {no_kid}")
    # The kid of an RSA key on an ES256 token: that key cannot verify it.
    crossed = jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": "r1"})
    assert refused(policy, f"Bearer {crossed}") == "the key cannot verify ES256"


def test_a_one_key_set_serves_tokens_without_kid(tmp_path: Path) -> None:
    policy = jwks_policy(tmp_path, [jwk(RSA_KEY)], ["RS256"])
    assert check(policy, f"Bearer {jwt.encode(claims(), RSA_KEY, algorithm='RS256')}")


def test_a_jwk_alg_binds_its_key(tmp_path: Path) -> None:
    """RFC 7517 §4.4: a key declared for RS256 does not verify PS256, although it could."""
    policy = jwks_policy(tmp_path, [jwk(RSA_KEY, kid="r1", alg="RS256")], ["RS256", "PS256"])
    ps = jwt.encode(claims(), RSA_KEY, algorithm="PS256", headers={"kid": "r1"})
    assert refused(policy, f"Bearer {ps}") == "the key cannot verify PS256"
    rs = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "r1"})
    assert check(policy, f"Bearer {rs}")


def test_encryption_keys_are_skipped(tmp_path: Path) -> None:
    policy = jwks_policy(
        tmp_path, [jwk(OTHER_RSA_KEY, kid="x", use="enc"), jwk(RSA_KEY, kid="r1")], ["RS256"]
    )
    assert set(policy.by_kid) == {"r1"}
    assert policy.only is not None  # one usable key: tokens without kid use it


# -- key files in the config -----------------------------------------------------------------------

CONFIG = """\
services:
  web:
    instances: ["127.0.0.1:9"]
policies:
  api:
    jwt:
      algorithms: [{algorithms}]
      {field}: {file}
routes:
  - path: /
    service: web
    policies: [api]
"""
KEY_LINE = 8  # the line of ``{field}`` above


def load_issues(tmp_path: Path, file: str, algorithms: str = "RS256") -> list[ConfigIssue]:
    field = "jwks_file" if file.endswith(".json") else "public_key_file"
    path = tmp_path / "portway.yaml"
    path.write_text(CONFIG.format(algorithms=algorithms, field=field, file=file))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert all(issue.source == str(path) for issue in caught.value.issues)
    return caught.value.issues


def only_issue(issues: list[ConfigIssue]) -> tuple[int | None, str, str]:
    assert len(issues) == 1, [str(i) for i in issues]
    return issues[0].line, issues[0].field, issues[0].message


def test_a_missing_key_file_is_named_with_its_line(tmp_path: Path) -> None:
    line, field, message = only_issue(load_issues(tmp_path, "keys/idp.pem"))
    assert (line, field) == (KEY_LINE, "policies.api.jwt.public_key_file")
    assert message == f"cannot read {tmp_path / 'keys/idp.pem'}: No such file or directory"


def test_portway_validate_reports_it(tmp_path: Path) -> None:
    path = tmp_path / "portway.yaml"
    path.write_text(CONFIG.format(algorithms="RS256", field="jwks_file", file="gone.json"))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert f"{path}:{KEY_LINE}:7: policies.api.jwt.jwks_file: cannot read" in result.output


@pytest.mark.parametrize(
    ("content", "algorithms", "message"),
    [
        (b"not a key", "RS256", "is not a PEM public key or certificate"),
        (
            RSA_KEY.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            "RS256",
            "holds a private key: give the gateway the public key only",
        ),
        (
            public_pem(RSA_KEY),
            "RS256, ES256",
            "holds a 2048-bit RSA key, which cannot verify ES256",
        ),
        (public_pem(EC_KEY), "ES384", "holds an EC secp256r1 key, which cannot verify ES384"),
        (
            public_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)),
            "RS256",
            "a 1024-bit RSA key is too short (RFC 7518: 2048 bits)",
        ),
    ],
)
def test_unusable_public_keys(
    tmp_path: Path, content: bytes, algorithms: str, message: str
) -> None:
    (tmp_path / "idp.pem").write_bytes(content)
    line, field, text = only_issue(load_issues(tmp_path, "idp.pem", algorithms))
    assert str(tmp_path / "idp.pem") in text
    assert message in text
    assert line is not None and field.startswith("policies.api.jwt.")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("{not json", "is not JSON"),
        ('{"kty": "RSA"}', 'is not a JWK set: no "keys" array'),
        ('{"keys": []}', "has no usable signature key"),
        ('{"keys": [{"kty": "nope"}]}', "has no usable signature key (key 0: Unsupported kty"),
        (json.dumps({"keys": [jwk(RSA_KEY, kid="a"), jwk(OTHER_RSA_KEY, kid="a")]}), "kid a"),
        (json.dumps({"keys": [jwk(EC_KEY)]}), "has no key for RS256"),
        ('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', "key 0: bytes cannot verify a JWS"),
    ],
)
def test_unusable_key_sets(tmp_path: Path, document: str, message: str) -> None:
    (tmp_path / "keys.json").write_text(document)
    line, field, text = only_issue(load_issues(tmp_path, "keys.json"))
    assert (line, field) == (KEY_LINE, "policies.api.jwt.jwks_file")
    assert str(tmp_path / "keys.json") in text
    assert message in text


def test_a_certificate_holds_a_usable_key(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    issued = pki.issue("idp.example.com")
    path = tmp_path / "portway.yaml"
    path.write_text(
        CONFIG.format(algorithms="ES256", field="public_key_file", file=issued.cert_file)
    )
    config = load_config(path)
    assert config.policies["api"].jwt is not None


def test_hmac_secrets_as_long_as_the_hash() -> None:
    """RFC 7518 §3.2: HS384 needs 48 bytes, HS512 64."""
    JwtConfig(algorithms=["HS256"], secret="k" * 32)
    with pytest.raises(ValidationError, match="needs 64 bytes"):
        JwtConfig(algorithms=["HS256", "HS512"], secret="k" * 48)


def test_a_verified_token_is_not_verified_again_until_its_exp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policy = secret_policy(leeway=0)
    decoded: list[str] = []
    real_decode = jwt.decode

    def counting_decode(token: str, *args: Any, **kwargs: Any) -> Any:
        decoded.append(token)
        return real_decode(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting_decode)
    token = jwt.encode(claims(exp=int(time.time()) + 2), SECRET, algorithm="HS256")
    for _ in range(5):
        assert check(policy, f"Bearer {token}").consumer == "alice"
    assert decoded == [token]
    # Time claims are checked on every use: once exp passes the cached token is verified again
    # and refused as expired (RFC 7519 §4.1.4).
    time.sleep(max(0.0, int(time.time()) + 2 - time.time()) + 0.05)
    assert refused(policy, f"Bearer {token}", EXPIRED) == "the token has expired"
    assert decoded == [token, token] and token not in policy.verified


def test_refused_tokens_are_not_remembered_and_the_cache_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import portway.policies.jwt_auth as jwt_auth

    monkeypatch.setattr(jwt_auth, "MAX_CACHED", 3)
    policy = secret_policy()
    forged = jwt.encode(claims(), "x" * 64, algorithm="HS256")
    refused(policy, f"Bearer {forged}")
    assert policy.verified == {}
    tokens = [jwt.encode(claims(sub=f"user{i}"), SECRET, algorithm="HS256") for i in range(5)]
    for token in tokens:
        check(policy, f"Bearer {token}")
    assert list(policy.verified) == tokens[2:]
    assert policy.verified[tokens[4]][0] == "user4"
