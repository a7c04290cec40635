"""ACME (RFC 8555): certificates for ``acme: true`` hosts, obtained and renewed through HTTP-01.

``client`` speaks to the CA (certbot's ``acme`` library underneath), ``manager`` decides what is
due and keeps the files and ``status.json``, ``process`` is the ACME process the supervisor forks.
The listeners take no part beyond serving ``challenge_dir`` and reloading certificate files.
"""

from portway.acme.client import AcmeClient, AcmeError, IssuedCertificate
from portway.acme.manager import CertificateManager, acme_certificates, needs_acme
from portway.acme.status import CertificateStatus, read_status, status_path

__all__ = [
    "AcmeClient",
    "AcmeError",
    "CertificateManager",
    "CertificateStatus",
    "IssuedCertificate",
    "acme_certificates",
    "needs_acme",
    "read_status",
    "status_path",
]
