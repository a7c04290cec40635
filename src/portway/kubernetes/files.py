"""Certificate material from Secrets, written where the native config can name it.

The native config reads certificates from files (``listeners[].tls.certificates[].cert_file``),
and every worker reads them itself, so a Secret's ``tls.crt`` and ``tls.key`` are written to the
state directory, mode 0600, named by namespace, name and a hash of the content: an unchanged
Secret keeps its file (the TLS layer sees no change), a changed one gets a new file that the new
config names. Files no config of the last two builds names are removed. The fallback certificate
(self-signed, served to clients whose SNI no Ingress claims, like ingress-nginx's "fake
certificate") is made once per state directory.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from portway.pki import load_key_pair, self_signed

FALLBACK_HOST = "portway-fallback.invalid"


class SecretFiles:
    def __init__(self, state_dir: Path) -> None:
        self.folder = state_dir / "secrets"
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.used: set[Path] = set()  # written or named during the current build
        self._previous: set[Path] = set()

    def write(self, namespace: str, name: str, suffix: str, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()[:16]
        path = self.folder / f"{namespace}.{name}.{digest}{suffix}"
        if not path.exists():
            temporary = path.with_name(f".{path.name}.tmp")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(temporary, path)
        self.used.add(path)
        return str(path)

    def fallback(self) -> tuple[str, str]:
        """The fallback certificate and key files, made (again) when missing or expiring."""
        cert, key = self.folder / "fallback.crt", self.folder / "fallback.key"
        try:
            pair = load_key_pair(str(cert), str(key))
            fresh = pair.info.seconds_left() > 86400
        except ValueError:
            fresh = False
        if not fresh:
            cert_pem, key_pem = self_signed([FALLBACK_HOST], days=3650)
            for path, data in ((cert, cert_pem), (key, key_pem)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
        self.used.update((cert, key))
        return str(cert), str(key)

    def finish_build(self) -> None:
        """Remove what neither this build nor the one before it named."""
        keep = self.used | self._previous
        for path in self.folder.iterdir():
            if path not in keep and not path.name.startswith("."):
                path.unlink(missing_ok=True)
        self._previous, self.used = self.used, set()
