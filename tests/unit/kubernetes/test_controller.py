"""Fault isolation across rebuilds: an object that turns invalid keeps serving its last valid
version, a file that stops parsing keeps its last objects, deletions apply; every process reads
the same published config; the watcher notices changes."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from portway.errors import ConfigError
from portway.kubernetes import DirectoryWatcher, ManifestController, Options
from portway.routing import compile_routes
from tests.unit.kubernetes.manifests import Doc, ingress, path, pick, rule, write


def shop(first_path: str = "/v1", path_type: str = "Prefix") -> Doc:
    return ingress("shop", rule("shop.example.com", path(first_path, "v1", path_type),
                                path("/", "home")))  # fmt: skip


def blog() -> Doc:
    return ingress("blog", rule("blog.example.com", path("/", "blog")))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write(tmp_path / "m", shop(), blog())


@pytest.fixture
def controller(folder: Path, tmp_path: Path) -> ManifestController:
    return ManifestController(folder, Options(), tmp_path / "state")


def test_an_invalid_edit_keeps_the_last_valid_version_serving(
    folder: Path, controller: ManifestController
) -> None:
    controller.build()
    write(folder, shop("/v2", "Bogus"), blog())  # refused by validation
    config = controller.build()
    assert pick(config, "shop.example.com/v1/x") == "default.v1.80"  # the last valid version
    assert pick(config, "blog.example.com/") == "default.blog.80"
    report = controller.report
    assert report is not None and report.kept == ("Ingress default/shop",)
    assert [i.field for i in report.errors] == ["spec.rules[0].http.paths[0].pathType"]
    write(folder, shop("/v2(", "ImplementationSpecific"), blog())  # refused by translation
    config = controller.build()
    assert pick(config, "shop.example.com/v1/x") == "default.v1.80"
    assert controller.report is not None and controller.report.kept == ("Ingress default/shop",)
    write(folder, shop("/v2"), blog())  # fixed: the new version serves
    config = controller.build()
    assert pick(config, "shop.example.com/v2/x") == "default.v1.80"
    assert pick(config, "shop.example.com/v1/x") == "default.home.80"
    assert controller.report is not None and controller.report.errors == []


def test_a_new_invalid_object_has_no_last_version_and_is_not_served(
    folder: Path, controller: ManifestController
) -> None:
    controller.build()
    write(folder, ingress("new", rule("new.example.com", path("x", "web"))), name="new.yaml")
    config = controller.build()
    assert pick(config, "new.example.com/x") is None
    assert pick(config, "shop.example.com/v1") == "default.v1.80"


def test_a_file_that_stops_parsing_keeps_its_objects_and_a_deleted_one_drops_them(
    folder: Path, controller: ManifestController
) -> None:
    write(folder, ingress("extra", rule("extra.example.com", path("/", "x"))), name="extra.yaml")
    controller.build()
    (folder / "extra.yaml").write_text("kind: Ingress\nmetadata: {name: [\n")
    config = controller.build()
    assert pick(config, "extra.example.com/") == "default.x.80"
    assert controller.report is not None and len(controller.report.errors) == 1
    (folder / "extra.yaml").unlink()
    config = controller.build()
    assert pick(config, "extra.example.com/") is None
    write(folder, shop(), name="manifests.yaml")  # the blog Ingress deleted from its file
    config = controller.build()
    assert pick(config, "blog.example.com/") is None


def test_other_processes_read_the_published_config(
    folder: Path, controller: ManifestController
) -> None:
    built = controller.build()
    write(folder, shop("/v9"), blog())  # not yet rebuilt: a worker must not see this
    controller.owner = os.getpid() + 1  # as a forked worker sees the controller
    assert controller.load() == built
    table = compile_routes(built.routes, built.services)
    assert not table.diagnostics


def test_no_config_at_all_is_an_error(tmp_path: Path) -> None:
    controller = ManifestController(tmp_path / "missing", Options(), tmp_path / "state")
    with pytest.raises(ConfigError):
        controller.build()


def test_the_watcher_calls_back_when_the_manifests_change(folder: Path) -> None:
    changed = threading.Event()
    watcher = DirectoryWatcher(folder, on_change=changed.set, debounce_ms=50)
    assert not watcher.check()  # nothing changed yet
    watcher._thread.start()  # without blocking this thread's signals (pytest's main thread)
    try:
        (folder / "notes.txt").write_text("not a manifest")
        assert not changed.wait(0.5)
        temporary = folder / ".new.yaml.tmp"
        temporary.write_text("kind: Service\n")
        temporary.rename(folder / "new.yaml")  # an atomic replace, as editors and kubectl do
        assert changed.wait(5.0)
    finally:
        watcher.stop()
