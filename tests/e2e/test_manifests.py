"""``portway run --manifests DIR`` as a user runs it: real files, real backends listed in
EndpointSlices, a supervisor with two workers. Edits to the directory apply without a restart
(same pids), and a broken Ingress keeps its last valid version while the others keep serving
(Ingress docs: "Ingress rules", "Path types"; EndpointSlice docs: "Conditions")."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import pytest
import yaml

from tests.support.backends import Backend
from tests.support.client import request
from tests.support.processes import PortwayProcess, free_port, run_portway_manifests
from tests.unit.kubernetes.manifests import (
    Doc,
    endpoint,
    endpoint_slice,
    ingress,
    path,
    rule,
    service,
)


@pytest.fixture
def backends() -> Iterator[dict[str, Backend]]:
    started = {name: Backend(name).start() for name in ("shop", "api", "blog", "old")}
    try:
        yield started
    finally:
        for backend in started.values():
            backend.stop()


def write_atomically(target: Path, *documents: Doc) -> None:
    """As kubectl-less tooling should: a temporary file renamed over the old one."""
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    os.replace(temporary, target)


def services(backends: dict[str, Backend], **ready: bool) -> list[Doc]:
    """One Service per backend; its slice lists the backend, ready unless ``ready`` says not."""
    documents: list[Doc] = []
    for name, backend in backends.items():
        documents.append(service(name, ports=[{"name": "http", "port": 80, "targetPort": "web"}]))
        documents.append(endpoint_slice(
            name, endpoint("127.0.0.1", ready=ready.get(name, True)),
            ports=[{"name": "http", "port": backend.port}],
        ))  # fmt: skip
    return documents


def shop(api_path: str = "/api", path_type: str = "Prefix") -> Doc:
    return ingress("shop", rule("shop.example.com",
                                path("/", "shop", port="http"),
                                path(api_path, "api", path_type, port="http")))  # fmt: skip


def blog() -> Doc:
    return ingress("blog", rule("blog.example.com", path("/", "blog", port=80)),
                   annotations={"nginx.ingress.kubernetes.io/proxy-read-timeout": "5"})  # fmt: skip


def answered_by(gateway: PortwayProcess, host: str, target: str) -> str | int:
    response = request(gateway.port, "GET", target, host=host)
    return response.json()["backend"] if response.status == 200 else response.status


def eventually(check: Callable[[], bool], timeout: float = 3.0) -> float:
    """Seconds until ``check`` held; fails after ``timeout``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not true within {timeout}s")
        time.sleep(0.05)
    return time.monotonic() - start


def test_manifests_are_served_and_edits_apply_without_a_restart(
    tmp_path: Path, backends: dict[str, Backend]
) -> None:
    folder = tmp_path / "manifests"
    folder.mkdir()
    write_atomically(folder / "services.yaml", *services(backends, old=False))
    write_atomically(folder / "shop.yaml", shop())
    write_atomically(folder / "blog.yml", blog())
    listen = f"127.0.0.1:{free_port()}"
    with run_portway_manifests(folder, workers=2, extra_args=["--listen", listen]) as gateway:
        pids = gateway.pids()
        assert len(pids) == 3  # the supervisor and two workers
        assert answered_by(gateway, "shop.example.com", "/") == "shop"
        assert answered_by(gateway, "shop.example.com", "/api/items") == "api"
        assert answered_by(gateway, "shop.example.com", "/apix") == "shop"  # element-wise
        assert answered_by(gateway, "blog.example.com", "/post/1") == "blog"
        assert answered_by(gateway, "other.example.com", "/") == 404

        # An edit: /api becomes Exact /v2 to the old backend's Service, ready now.
        write_atomically(folder / "services.yaml", *services(backends))
        edited = ingress("shop", rule("shop.example.com", path("/", "shop", port="http"),
                                      path("/v2", "old", "Exact", port="http")))  # fmt: skip
        write_atomically(folder / "shop.yaml", edited)
        took = eventually(lambda: answered_by(gateway, "shop.example.com", "/v2") == "old")
        assert took < 2.5
        for _ in range(4):  # every worker has it (connections spread over both)
            assert answered_by(gateway, "shop.example.com", "/api/items") == "shop"
            assert answered_by(gateway, "shop.example.com", "/v2/x") == "shop"  # Exact
        assert gateway.pids() == pids  # no restart
        gateway.wait_for_stderr(r"manifests build 2")

        # A broken edit: the shop Ingress keeps its last valid version, the blog serves on.
        write_atomically(folder / "shop.yaml", shop("/v3", "Bogus"))
        gateway.wait_for_stderr(r"Ingress default/shop is invalid: its last valid version", 3.0)
        gateway.wait_for_stderr(r'pathType: Unsupported value: "Bogus"')
        for _ in range(4):
            assert answered_by(gateway, "shop.example.com", "/v2") == "old"
            assert answered_by(gateway, "blog.example.com", "/") == "blog"
        # A new Ingress that is broken is simply not served; a file that no longer parses keeps
        # what it had.
        (folder / "broken.yaml").write_text("kind: Ingress\nmetadata: {name: [\n")
        gateway.wait_for_stderr(r"broken.yaml:\d+: invalid YAML", 3.0)
        assert answered_by(gateway, "blog.example.com", "/") == "blog"
        assert gateway.pids() == pids


def test_a_terminating_endpoint_gets_no_new_requests(
    tmp_path: Path, backends: dict[str, Backend]
) -> None:
    """EndpointSlice "Conditions": during a rollout the old pod turns terminating (and not
    ready); from the next reload no request reaches it."""
    old, new = backends["old"], backends["api"]
    folder = tmp_path / "manifests"
    folder.mkdir()

    documents = [
        service("app", ports=[{"name": "http", "port": 80}]),
        endpoint_slice("app", endpoint("127.0.0.1"), name="app-new",
                       ports=[{"name": "http", "port": new.port}]),
        endpoint_slice("app", endpoint("127.0.0.1"), name="app-old",
                       ports=[{"name": "http", "port": old.port}]),
        ingress("app", rule(None, path("/", "app", port="http"))),
    ]  # fmt: skip
    write_atomically(folder / "app.yaml", *documents)
    listen = f"127.0.0.1:{free_port()}"
    with run_portway_manifests(folder, extra_args=["--listen", listen]) as gateway:
        seen = {answered_by(gateway, "app.example.com", f"/{i}") for i in range(6)}
        assert seen == {"api", "old"}
        documents[2] = endpoint_slice(
            "app", endpoint("127.0.0.1", ready=False, serving=True, terminating=True),
            name="app-old", ports=[{"name": "http", "port": old.port}],
        )  # fmt: skip
        write_atomically(folder / "app.yaml", *documents)
        gateway.wait_for_stderr(r"manifests build 2", 3.0)
        gateway.wait_for_stderr(r"config generation 2 is live", 3.0)
        old.clear_requests()
        answers = [answered_by(gateway, "app.example.com", f"/{i}") for i in range(10)]
        assert answers == ["api"] * 10
        assert old.requests == []


def test_an_htpasswd_secret_guards_the_ingress_and_its_edits_apply_live(
    tmp_path: Path, backends: dict[str, Backend]
) -> None:
    """ingress-nginx's ``auth-type: basic``: the Secret's bcrypt users are checked; a user added to
    the Secret can log in after the edit, with no restart; a Secret edited into an MD5 hash keeps
    the last valid version serving (never the Ingress served open)."""

    def users(**passwords: str) -> Doc:
        lines = "".join(
            f"{name}:$2y${bcrypt.hashpw(pw.encode(), bcrypt.gensalt(4)).decode()[4:]}\n"
            for name, pw in passwords.items()
        )
        return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": "shop-users", "namespace": "default"},
                "data": {"auth": base64.b64encode(lines.encode()).decode()}}  # fmt: skip

    def basic(user: str, password: str) -> dict[str, str]:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    guarded = ingress("shop", rule("shop.example.com", path("/", "shop", port="http")),
                      annotations={"nginx.ingress.kubernetes.io/auth-type": "basic",
                                   "nginx.ingress.kubernetes.io/auth-secret": "shop-users",
                                   "nginx.ingress.kubernetes.io/auth-realm": "Shop staff"})  # fmt: skip
    folder = tmp_path / "manifests"
    folder.mkdir()
    write_atomically(folder / "services.yaml", *services({"shop": backends["shop"]}))
    write_atomically(folder / "shop.yaml", guarded, users(alice="wonder"))
    listen = f"127.0.0.1:{free_port()}"
    with run_portway_manifests(folder, extra_args=["--listen", listen]) as gateway:
        port = gateway.port
        missing = request(port, "GET", "/", host="shop.example.com")
        assert missing.status == 401
        assert missing.header("www-authenticate") == 'Basic realm="Shop staff", charset="UTF-8"'
        ok = request(port, "GET", "/", host="shop.example.com", headers=basic("alice", "wonder"))
        assert ok.status == 200 and ok.json()["headers"]["x-portway-consumer"] == "alice"
        bob = basic("bob", "builder")
        assert request(port, "GET", "/", host="shop.example.com", headers=bob).status == 401
        write_atomically(folder / "shop.yaml", guarded, users(alice="wonder", bob="builder"))
        gateway.wait_for_stderr(r"config generation 2 is live", 5.0)
        assert request(port, "GET", "/", host="shop.example.com", headers=bob).status == 200
        weak = users(alice="wonder")
        weak["data"]["auth"] = base64.b64encode(b"alice:$apr1$x$y\n").decode()
        write_atomically(folder / "shop.yaml", guarded, weak)
        gateway.wait_for_stderr(r"Apache MD5 hashes are not accepted", 5.0)
        # The last valid version keeps serving: still guarded, bob still known.
        assert request(port, "GET", "/", host="shop.example.com").status == 401
        assert request(port, "GET", "/", host="shop.example.com", headers=bob).status == 200


def test_validate_lists_every_issue_and_exits_1_on_errors(tmp_path: Path) -> None:
    import subprocess
    import sys

    folder = tmp_path / "manifests"
    folder.mkdir()
    write_atomically(folder / "ok.yaml", blog())
    command = [sys.executable, "-m", "portway", "validate", "--manifests", str(folder)]
    ok = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "Service default/blog not found: requests answer 503" in ok.stderr
    assert "1 objects: 1 routes, 1 services; 0 errors, 1 warnings" in ok.stdout
    write_atomically(folder / "bad.yaml", shop("/x", "Bogus"))
    bad = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert bad.returncode == 1
    assert 'bad.yaml:1 document 0: Ingress default/shop spec.rules[0].http.paths[1].pathType: ' \
        'Unsupported value: "Bogus"' in bad.stderr  # fmt: skip


def test_issues_of_the_last_build_are_metrics(tmp_path: Path, backends: dict[str, Backend]) -> None:
    """The issue's "reported (log, metric ...)": what the last build found, as gauges of the
    admin API (the supervisor publishes the build's report with its reload counters)."""
    from tests.support.admin import admin_get, wait_until

    folder = tmp_path / "manifests"
    folder.mkdir()
    write_atomically(folder / "services.yaml", *services(backends, old=False))
    write_atomically(folder / "blog.yml", blog())
    write_atomically(folder / "shop.yaml", shop("/v3", "Bogus"))  # invalid from the start
    admin = ["--admin", "127.0.0.1:0", "--listen", f"127.0.0.1:{free_port()}"]
    with run_portway_manifests(folder, workers=1, extra_args=admin) as gateway:
        error = 'portway_kubernetes_issues{kind="Ingress",severity="error"} 1.0'

        def metrics() -> str:
            return admin_get(gateway.admin_port, "/metrics").text

        assert wait_until(lambda: error in metrics()), metrics()
        text = metrics()
        assert "portway_kubernetes_objects_kept 0.0" in text  # never valid: nothing kept
        objects = [
            line for line in text.splitlines() if line.startswith("portway_kubernetes_objects ")
        ]
        assert objects and float(objects[0].split()[1]) >= 4  # Services, slices, two Ingresses

        write_atomically(folder / "shop.yaml", shop())  # fixed: the error is gone
        assert wait_until(lambda: 'severity="error"' not in metrics()), metrics()
        assert answered_by(gateway, "shop.example.com", "/") == "shop"


def test_access_annotations_are_enforced_by_the_gateway(
    tmp_path: Path, backends: dict[str, Backend]
) -> None:
    """ingress-nginx's whitelist-source-range, limit-rpm and enable-cors, served: an address
    outside the allowlist gets 403 ``address_refused``, the third request of a minute 429 (one
    worker: a local limit counts per worker), a preflight 204 from the gateway itself."""
    nginx = "nginx.ingress.kubernetes.io/"
    folder = tmp_path / "manifests"
    folder.mkdir()
    write_atomically(folder / "services.yaml", *services(backends))
    write_atomically(
        folder / "ingresses.yaml",
        ingress("closed", rule("closed.example.com", path("/", "shop", port="http")),
                annotations={nginx + "whitelist-source-range": "10.0.0.0/8, 192.168.0.0/16"}),
        ingress("limited", rule("limited.example.com", path("/", "api", port="http")),
                annotations={nginx + "limit-rpm": "2"}),
        ingress("browsers", rule("cors.example.com", path("/", "blog", port="http")),
                annotations={nginx + "enable-cors": "true",
                             nginx + "cors-allow-origin": "https://app.example.com"}),
    )  # fmt: skip
    listen = f"127.0.0.1:{free_port()}"
    with run_portway_manifests(folder, workers=1, extra_args=["--listen", listen]) as gateway:
        refused = request(gateway.port, "GET", "/", host="closed.example.com")
        assert refused.status == 403
        assert refused.header("portway-error") == "address_refused"
        assert backends["shop"].requests == []

        answers = [request(gateway.port, "GET", f"/{i}", host="limited.example.com")
                   for i in range(3)]  # fmt: skip
        assert [a.status for a in answers] == [200, 200, 429]
        assert answers[2].header("portway-error") == "rate_limited"
        assert answers[2].header("retry-after") is not None

        preflight = request(gateway.port, "OPTIONS", "/items", host="cors.example.com", headers={
            "origin": "https://app.example.com", "access-control-request-method": "PUT"})  # fmt: skip
        assert preflight.status == 204
        assert preflight.header("access-control-allow-origin") == "https://app.example.com"
        assert preflight.header("access-control-allow-credentials") == "true"
        assert preflight.header("access-control-max-age") == "1728000"
        assert answered_by(gateway, "cors.example.com", "/") == "blog"
