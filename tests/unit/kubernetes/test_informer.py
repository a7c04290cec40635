"""List then watch, against the fake API server through the real client (kubeconfig, TLS, token):
events apply to the store, a dropped stream resumes from the version reached, 410 Gone (as an
ERROR event or as the HTTP status) lists again, bookmarks move the version, the namespace filter
is in the URL. Each scenario checks that the store ends equal to the server's objects."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from portway.kubernetes.api import INGRESS, INGRESS_CLASS, SECRET, SERVICE, Api, Kind
from portway.kubernetes.informer import Backoff, Informer
from tests.support.fake_apiserver import FakeApiServer
from tests.unit.kubernetes.cluster_support import FAST, api_config, run, until
from tests.unit.kubernetes.manifests import Doc, ingress, path, rule, service


def shop(name: str = "shop", namespace: str = "default", host: str = "shop.example.com") -> Doc:
    return ingress(name, rule(host, path("/", "web")), namespace=namespace)


class Watched:
    """An informer running on the test's loop, with the changes it reported."""

    def __init__(self, fake: FakeApiServer, folder: Path, kind: Kind = INGRESS,
                 namespace: str | None = None) -> None:  # fmt: skip
        self.api = Api(api_config(fake, folder))
        self.changes = 0
        self.informer = Informer(self.api.http, kind, namespace, self.changed, FAST)

    def changed(self) -> None:
        self.changes += 1

    def names(self) -> set[tuple[str, str]]:
        return set(self.informer.objects)

    async def __aenter__(self) -> Watched:
        self.task = asyncio.create_task(self.informer.run())
        await until(self.informer.synced.is_set)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.task.cancel()
        await self.api.aclose()


def server_names(fake: FakeApiServer) -> set[tuple[str, str]]:
    return {(ns, name) for ns, name in fake.names("Ingress")}


def test_list_then_watch_applies_added_modified_deleted(fake: FakeApiServer, tmp_path: Path) -> None:
    fake.apply(shop(), shop("blog", host="blog.example.com"))
    listed_at = fake.version

    async def scenario() -> None:
        async with Watched(fake, tmp_path) as watched:
            informer = watched.informer
            assert watched.names() == {("default", "shop"), ("default", "blog")}
            item = informer.objects[("default", "shop")]
            assert (item["kind"], item["apiVersion"]) == ("Ingress", "networking.k8s.io/v1")
            await until(lambda: fake.watching("Ingress") == 1)
            fake.apply(shop("new", host="new.example.com"))
            fake.apply(shop("shop", host="moved.example.com"))
            fake.delete("Ingress", "default", "blog")
            await until(lambda: watched.names() == {("default", "shop"), ("default", "new")})
            host = informer.objects[("default", "shop")]["spec"]["rules"][0]["host"]
            assert host == "moved.example.com"
            assert informer.resource_version == str(fake.version)
            assert informer.lists == 1

    run(scenario)
    (lister,) = fake.requests("GET", "/apis/networking.k8s.io/v1/ingresses", limit="500")
    assert "watch" not in lister.query and lister.token == "token-a"
    watch = fake.requests("GET", "/ingresses", watch="true")[0]
    assert watch.query == {"watch": "true", "resourceVersion": str(listed_at),
                           "allowWatchBookmarks": "true", "timeoutSeconds": "300"}  # fmt: skip


def test_a_dropped_stream_resumes_from_the_last_version_without_listing_again(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    fake.apply(shop())

    async def scenario() -> None:
        async with Watched(fake, tmp_path) as watched:
            await until(lambda: fake.watching("Ingress") == 1)
            fake.apply(shop("a", host="a.example.com"))
            await until(lambda: ("default", "a") in watched.names())
            seen = watched.informer.resource_version
            with fake.held("Ingress"):
                assert fake.drop_watches("Ingress") == 1
                # Changes while the client is away are not lost: it resumes from ``seen``.
                fake.apply(shop("b", host="b.example.com"))
                fake.delete("Ingress", "default", "shop")
            await until(lambda: watched.names() == server_names(fake))
            assert watched.informer.lists == 1
            resumed = fake.requests("GET", "/ingresses", watch="true")[-1]
            assert resumed.query["resourceVersion"] == seen

    run(scenario)


@pytest.mark.parametrize("as_http", [False, True], ids=["error-event", "http-status"])
def test_410_gone_lists_again_and_the_store_matches_the_server(
    fake: FakeApiServer, tmp_path: Path, as_http: bool
) -> None:
    fake.gone_as_http = as_http
    fake.apply(shop(), shop("old", host="old.example.com"))

    async def scenario() -> None:
        async with Watched(fake, tmp_path) as watched:
            await until(lambda: fake.watching("Ingress") == 1)
            with fake.held("Ingress"):
                fake.drop_watches("Ingress")
                # While the client is away, its version falls out of the server's history.
                fake.delete("Ingress", "default", "old")
                fake.apply(shop("fresh", host="fresh.example.com"))
                fake.expire("Ingress")
            await until(lambda: watched.informer.lists == 2)
            assert watched.names() == server_names(fake) == {("default", "shop"),
                                                             ("default", "fresh")}  # fmt: skip
            assert watched.informer.resource_version == str(fake.version)
            fake.apply(shop("after", host="after.example.com"))  # and it watches on
            await until(lambda: ("default", "after") in watched.names())

    run(scenario)
    lists = fake.requests("GET", "/ingresses", limit="500")
    assert len(lists) == 2


def test_bookmarks_move_the_version_a_reconnection_starts_from(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    fake.apply(shop())

    async def scenario() -> None:
        async with Watched(fake, tmp_path) as watched:
            await until(lambda: fake.watching("Ingress") == 1)
            fake.apply(service("unrelated"))  # the version moves on for another kind
            changes = watched.changes
            bookmark = fake.bookmark()
            await until(lambda: watched.informer.bookmarks == 1)
            assert watched.informer.resource_version == str(bookmark)
            assert watched.changes == changes  # a bookmark changes no object
            fake.end_watches("Ingress")  # as timeoutSeconds ends it: watch again, no list
            await until(lambda: len(fake.requests("GET", "/ingresses", watch="true")) == 2)
            assert watched.informer.lists == 1

    run(scenario)
    again = fake.requests("GET", "/ingresses", watch="true")[-1]
    assert again.query["resourceVersion"] == str(fake.version)


def test_the_namespace_filter_is_in_the_path_and_cluster_scoped_kinds_ignore_it(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    fake.apply(shop(namespace="shop"), shop(namespace="other"))
    fake.apply({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                "metadata": {"name": "portway"}, "spec": {"controller": "x"}})  # fmt: skip

    async def scenario() -> None:
        async with Watched(fake, tmp_path, INGRESS, "shop") as ingresses:
            await until(lambda: fake.watching("Ingress") == 1)
            fake.apply(shop("late", namespace="other"), shop("late", namespace="shop"))
            await until(lambda: ("shop", "late") in ingresses.names())
            assert ingresses.names() == {("shop", "shop"), ("shop", "late")}
        async with Watched(fake, tmp_path, INGRESS_CLASS, "shop") as classes:
            assert classes.names() == {("", "portway")}

    run(scenario)
    paths = {r.path for r in fake.requests("GET")}
    assert "/apis/networking.k8s.io/v1/namespaces/shop/ingresses" in paths
    assert "/apis/networking.k8s.io/v1/ingressclasses" in paths
    assert "/apis/networking.k8s.io/v1/ingresses" not in paths


def test_secrets_are_listed_without_helm_releases_and_service_account_tokens(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    def secret(name: str, kind: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Secret", "type": kind,
                "metadata": {"name": name, "namespace": "default"}}  # fmt: skip

    fake.apply(secret("tls", "kubernetes.io/tls"), secret("release", "helm.sh/release.v1"),
               secret("token", "kubernetes.io/service-account-token"))  # fmt: skip

    async def scenario() -> None:
        async with Watched(fake, tmp_path, SECRET) as secrets:
            assert secrets.names() == {("default", "tls")}

    run(scenario)


def test_failures_are_retried_with_growing_jittered_delays(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    delays = [Backoff(base=1.0, cap=8.0).delay(n) for n in range(1, 8) for _ in range(20)]
    assert all(0.5 <= d <= 8.0 for d in delays)
    firsts = [Backoff(base=1.0, cap=8.0).delay(1) for _ in range(50)]
    assert max(firsts) <= 1.0 and len(set(firsts)) > 1  # jitter: not all the same
    assert min(Backoff(base=1.0, cap=8.0).delay(10) for _ in range(50)) >= 4.0  # capped at 8

    async def scenario() -> None:
        # A token the server refuses: 401 on every list, retried, never synced.
        api = Api(api_config(fake, tmp_path, token="wrong"))
        informer = Informer(api.http, SERVICE, None, lambda: None, FAST)
        task = asyncio.create_task(informer.run())
        await until(lambda: informer.failures >= 3)
        assert not informer.synced.is_set()
        task.cancel()
        await api.aclose()

    run(scenario)
    assert all(r.token == "wrong" for r in fake.requests("GET", "/services"))
