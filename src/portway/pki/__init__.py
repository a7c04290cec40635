"""X.509 material: reading and checking certificates, keys and CA bundles, and describing them.

The lowest layer that knows about certificates: the config checks use it to report bad files, the
TLS layer to build contexts from files it has checked, the admin API to show expiry dates.
"""

from portway.pki.material import (
    CertificateInfo,
    KeyPair,
    MaterialError,
    describe,
    load_ca_bundle,
    load_key_pair,
    self_signed,
)

__all__ = [
    "CertificateInfo",
    "KeyPair",
    "MaterialError",
    "describe",
    "load_ca_bundle",
    "load_key_pair",
    "self_signed",
]
