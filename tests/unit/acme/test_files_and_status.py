"""Atomic replacement of the files other processes read, and the status document's round trip."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from portway.acme import CertificateStatus, read_status, status_path
from portway.acme.files import write_atomic
from portway.acme.status import write_status
from portway.config.tls import AcmeConfig


def test_write_atomic_replaces_whole_files_with_the_given_mode(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "privkey.pem"
    write_atomic(target, b"first", mode=0o600)
    inode = os.stat(target).st_ino
    write_atomic(target, b"second", mode=0o600)
    assert target.read_bytes() == b"second"
    assert os.stat(target).st_mode & 0o777 == 0o600
    assert os.stat(target).st_ino != inode  # a new file renamed over the old one
    assert sorted(p.name for p in target.parent.iterdir()) == ["privkey.pem"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "fullchain.pem"
    write_atomic(target, b"old")

    def broken(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["fullchain.pem"]


def test_status_round_trip_and_unreadable_documents(tmp_path: Path) -> None:
    config = AcmeConfig(state_dir=str(tmp_path))
    assert read_status(config) == []  # not written yet
    record = CertificateStatus(
        ["portway.test"], "/c.pem", "/k.pem", serial="ab", last_error="no", failures=2
    )
    write_status(config, [record], 1700000000.0)
    document = json.loads(status_path(config).read_text())
    assert document["updated"] == 1700000000.0
    assert document["certificates"][0]["hosts"] == ["portway.test"]
    assert read_status(config) == [record]

    status_path(config).write_text("{not json")
    assert read_status(config) == []
    status_path(config).write_text(json.dumps({"version": 1, "certificates": [{"x": 1}, 3]}))
    assert read_status(config) == []
