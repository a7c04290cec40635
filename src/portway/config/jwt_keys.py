"""JWT verification keys read from files: PEM public keys (or certificates) and JWK sets.

``portway validate`` and a worker building a ``jwt`` policy read them with the same functions, so
what validation accepts is exactly what a worker can load. Keys too weak for RFC 7518, private
keys and keys of the wrong type for the accepted algorithms are refused, naming the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from portway.config.policies import JwtConfig
from portway.config.reference import FieldPath

Issue = tuple[FieldPath, str]

VerifyingKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)
_PUBLIC = (
    rsa.RSAPublicKey,
    ec.EllipticCurvePublicKey,
    ed25519.Ed25519PublicKey,
    ed448.Ed448PublicKey,
)
_PRIVATE = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)
_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
MIN_RSA_BITS = 2048  # RFC 7518 §3.3 and §3.5


class KeyFileError(Exception):
    """A key file that cannot be used; the message names the file and why."""


class Jwk(NamedTuple):
    """One usable key of a JWK set: its ``kid`` and ``alg`` (None when the set gives none)."""

    kid: str | None
    alg: str | None
    key: VerifyingKey


def key_fits(algorithm: str, key: VerifyingKey) -> bool:
    """Can ``key`` verify ``algorithm`` (RFC 7518 §3.1)? ES* need their own curve."""
    if algorithm.startswith(("RS", "PS")):
        return isinstance(key, rsa.RSAPublicKey)
    if algorithm in _CURVES:
        return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == _CURVES[algorithm]
    if algorithm == "EdDSA":
        return isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
    return False  # HS*: a secret, never a key from a file


def _key_name(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"an EC {key.curve.name} key"
    if isinstance(key, rsa.RSAPublicKey):
        return f"a {key.key_size}-bit RSA key"
    return f"an {type(key).__name__.removeprefix('_').replace('PublicKey', '')} key"


def _verifying(key: object, where: str) -> VerifyingKey:
    """The public half of ``key``, if it is a kind JWS can verify with."""
    if isinstance(key, _PRIVATE):
        key = key.public_key()
    if isinstance(key, _PUBLIC):
        if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
            raise KeyFileError(f"{where}: {_key_name(key)} is too short (RFC 7518: 2048 bits)")
        return key
    raise KeyFileError(f"{where}: {type(key).__name__} cannot verify a JWS (RSA, EC or EdDSA)")


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror or exc}") from None


def load_public_key(path: str) -> VerifyingKey:
    """The key of a PEM ``PUBLIC KEY`` file (or the public key of a PEM certificate)."""
    data = _read(path)
    if b"PRIVATE KEY-----" in data:
        raise KeyFileError(f"{path} holds a private key: give the gateway the public key only")
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key: object = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not a PEM public key or certificate: {exc}") from None
    return _verifying(key, path)


def load_jwk_set(path: str) -> list[Jwk]:
    """The signature keys of a JWK set file (RFC 7517 §5). Keys this gateway cannot use (``use:
    enc``, unknown ``kty`` or ``alg``) are skipped as a JWKS client does; none usable is an error,
    and so is a ``kid`` given twice (a token naming it would have two keys)."""
    data = _read(path)
    try:
        document: Any = json.loads(data)
    except ValueError as exc:
        raise KeyFileError(f"{path} is not JSON: {exc}") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise KeyFileError(f'{path} is not a JWK set: no "keys" array')
    keys: list[Jwk] = []
    skipped: list[str] = []
    for position, entry in enumerate(entries):
        where = f"{path} key {position}"
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            key = _verifying(jwt.PyJWK(entry).key, where)
        except jwt.PyJWTError as exc:
            skipped.append(f"key {position}: {str(exc).split(':')[0]}")
            continue
        except KeyFileError as exc:  # a secret ("oct"), or RSA too short
            skipped.append(str(exc).removeprefix(f"{path} "))
            continue
        kid = entry.get("kid")
        alg = entry.get("alg")
        keys.append(
            Jwk(kid if isinstance(kid, str) else None, alg if isinstance(alg, str) else None, key)
        )
    if not keys:
        why = f" ({'; '.join(skipped)})" if skipped else ""
        raise KeyFileError(f"{path} has no usable signature key{why}")
    kids = [k.kid for k in keys if k.kid is not None]
    twice = sorted({kid for kid in kids if kids.count(kid) > 1})
    if twice:
        raise KeyFileError(f"{path} has more than one key with kid {', '.join(twice)}")
    return keys


def check_jwt_keys(path: FieldPath, config: JwtConfig) -> list[Issue]:
    """The key file exists, parses, and can verify the algorithms the policy accepts."""
    keys: list[VerifyingKey] = []
    field = "public_key_file" if config.public_key_file is not None else "jwks_file"
    try:
        if config.public_key_file is not None:
            keys = [load_public_key(config.public_key_file)]
        elif config.jwks_file is not None:
            keys = [
                jwk.key
                for jwk in load_jwk_set(config.jwks_file)
                if jwk.alg is None or jwk.alg in config.algorithms
            ]
        else:
            return []
    except KeyFileError as exc:
        return [((*path, field), str(exc))]
    if config.public_key_file is not None:
        unfit = [a for a in config.algorithms if not key_fits(a, keys[0])]
        if unfit:
            return [
                (
                    (*path, "algorithms"),
                    f"{config.public_key_file} holds {_key_name(keys[0])}, which cannot verify "
                    f"{', '.join(unfit)}",
                )
            ]
    elif not any(key_fits(a, key) for a in config.algorithms for key in keys):
        return [
            (
                (*path, "jwks_file"),
                f"{config.jwks_file} has no key for {', '.join(config.algorithms)}",
            )
        ]
    return []
