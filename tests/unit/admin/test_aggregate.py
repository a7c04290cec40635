"""Summing worker reports, and the Prometheus families rendered from the sums."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from portway.admin.aggregate import Aggregator, aggregate
from portway.admin.metric_specs import ALL
from portway.admin.metrics import MetricsView, registry_for, render
from portway.health.state import HealthState
from portway.observability.stats import WorkerStats


def worker(pid: int, durations: list[float], **extra: Any) -> dict[str, Any]:
    """A real worker's snapshot: one GET /site per duration, then what the worker adds."""
    stats = WorkerStats()
    stats.pid = pid
    for seconds in durations:
        stats.record("site", "web", "GET", 200, seconds, seconds / 2, 10, 100, None)
    stats.record("", "", "GET", 404, 0.0001, -1.0, 0, 50, b"no_route")
    stats.retried("web")
    stats.overflowed("web", "max_requests")
    report = stats.snapshot()
    report.update(
        {"connections_open": 2, "upstream_connections": [["web", 3]], "instances": [], **extra}
    )
    return report


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def rendered(reports: list[dict[str, Any] | None], **view: Any) -> dict[Any, float]:
    totals = aggregate(reports, view.pop("control", None))
    metrics_view = MetricsView(totals, view.get("health", {}), view.get("instances", ()))
    body, content_type = render(registry_for(lambda: metrics_view), "")
    assert content_type.startswith("text/plain")
    return samples(body.decode())


def test_counters_sum_across_workers() -> None:
    a = worker(1, [0.002, 0.003, 0.2])
    b = worker(2, [0.004, 30.0])
    found = rendered([a, b, None])  # a worker that has not reported yet adds nothing
    site = (("method", "GET"), ("route", "site"), ("service", "web"), ("status_class", "2xx"))
    assert found[("portway_requests_total", site)] == 5
    no_route = (("method", "GET"), ("route", ""), ("service", ""), ("status_class", "4xx"))
    assert found[("portway_requests_total", no_route)] == 2
    route = (("route", "site"), ("service", "web"))
    assert found[("portway_request_body_bytes_total", route)] == 50
    assert found[("portway_response_bytes_total", route)] == 500
    assert found[("portway_retries_total", (("service", "web"),))] == 2
    assert found[("portway_circuit_breaker_overflows_total",
                  (("limit", "max_requests"), ("service", "web")))] == 2  # fmt: skip
    assert found[("portway_local_errors_total", (("cause", "no_route"),))] == 2
    assert found[("portway_client_connections_open", ())] == 4
    assert found[("portway_upstream_connections_open", (("service", "web"),))] == 6
    assert found[("portway_workers_reporting", ())] == 2


def test_histograms_sum_bucket_by_bucket_into_cumulative_le_buckets() -> None:
    a = worker(1, [0.002, 0.003, 0.2])
    b = worker(2, [0.004, 30.0])
    found = rendered([a, b])
    route = (("route", "site"), ("service", "web"))

    def bucket(le: str) -> float:
        return found[("portway_request_duration_seconds_bucket", (("le", le), *route))]

    assert bucket("0.001") == 0
    assert bucket("0.0025") == 1  # 0.002
    assert bucket("0.005") == 3  # + 0.003, 0.004 from the other worker
    assert bucket("0.1") == 3
    assert bucket("0.25") == 4  # + 0.2
    assert bucket("10.0") == 4
    assert bucket("+Inf") == 5  # + 30 s
    assert found[("portway_request_duration_seconds_count", route)] == 5
    assert abs(found[("portway_request_duration_seconds_sum", route)] - 30.209) < 1e-9
    upstream = (("service", "web"),)
    assert found[("portway_upstream_duration_seconds_count", upstream)] == 5
    assert found[("portway_upstream_duration_seconds_bucket", (("le", "0.0025"), *upstream))] == 3


def test_instance_gauges_combine_by_meaning() -> None:
    a = worker(1, [], instances=[["web", "10.0.0.1:80", True, True, 2],
                                 ["web", "10.0.0.2:80", True, False, 1]])  # fmt: skip
    b = worker(2, [], instances=[["web", "10.0.0.1:80", True, False, 3],
                                 ["web", "10.0.0.2:80", False, False, 0]])  # fmt: skip
    instances = (("web", "10.0.0.1:80"), ("web", "10.0.0.2:80"), ("api", "10.0.1.1:80"))
    health = {("api", "10.0.1.1:80"): HealthState.UNHEALTHY}  # from the health board
    found = rendered([a, b], instances=instances, health=health)

    def value(name: str, service: str, address: str) -> float:
        return found[(name, (("instance", address), ("service", service)))]

    assert value("portway_instance_ejected", "web", "10.0.0.1:80") == 1  # one worker ejects it
    assert value("portway_instance_ejected", "web", "10.0.0.2:80") == 0
    assert value("portway_instance_active_requests", "web", "10.0.0.1:80") == 5
    assert value("portway_instance_healthy", "web", "10.0.0.1:80") == 1
    assert value("portway_instance_healthy", "web", "10.0.0.2:80") == 0  # a worker applies it down
    assert value("portway_instance_healthy", "api", "10.0.1.1:80") == 0  # the board says so
    assert value("portway_instance_ejected", "api", "10.0.1.1:80") == 0  # no worker reported it


def test_reload_counters_come_from_the_supervisor_not_once_per_worker() -> None:
    a = worker(1, [], reloads_ok=1, last_reload_ok=100.0)
    b = worker(2, [], reloads_ok=1, last_reload_ok=101.0)
    control = {"reloads_ok": 1, "reloads_failed": 2, "last_reload_ok": 99.5}
    found = rendered([a, b], control=control)
    assert found[("portway_config_reloads_total", (("result", "success"),))] == 1
    assert found[("portway_config_reloads_total", (("result", "failure"),))] == 2
    assert found[("portway_config_last_reload_success_timestamp_seconds", ())] == 99.5
    alone = rendered([a])  # a single gateway: its own counters
    assert alone[("portway_config_reloads_total", (("result", "success"),))] == 1
    assert alone[("portway_config_last_reload_success_timestamp_seconds", ())] == 100.0


def test_every_metric_is_defined_once_with_help_and_the_portway_prefix() -> None:
    names = [spec.name for spec in ALL]
    assert len(names) == len(set(names))
    assert all(n.startswith("portway_") and spec.help for n, spec in zip(names, ALL, strict=True))
    text = render(registry_for(lambda: MetricsView(aggregate([]), {}, ())), "")[0].decode()
    for spec in ALL:
        assert f"# HELP {spec.name} {spec.help}\n# TYPE {spec.name} {spec.kind}\n" in text
    # ...and every family exposed is one of them: none rendered past the list.
    exposed = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert sorted(exposed) == sorted(names)


def test_ejection_events_sum_over_workers_and_outlive_a_replaced_worker() -> None:
    def ejecting(pid: int, times: int) -> dict[str, Any]:
        stats = WorkerStats()
        stats.pid = pid
        for _ in range(times):
            stats.instance_ejected("web", "10.0.0.2:80")
        return stats.snapshot() | {"instances": []}

    instances = (("web", "10.0.0.1:80"), ("web", "10.0.0.2:80"))
    found = rendered([ejecting(1, 2), ejecting(2, 1)], instances=instances)

    def ejections(address: str) -> float:
        labels = (("instance", address), ("service", "web"))
        return found[("portway_instance_ejections_total", labels)]

    assert ejections("10.0.0.2:80") == 3
    assert ejections("10.0.0.1:80") == 0  # never ejected: a sample all the same
    aggregator = Aggregator()
    aggregator.observe([ejecting(1, 2)])
    totals, _ = aggregator.observe([ejecting(3, 1)])  # slot 0 restarted, counting from zero
    assert totals.ejections == {("web", "10.0.0.2:80"): 3}


def test_a_replaced_worker_keeps_its_counts_and_a_failed_read_keeps_the_last_report() -> None:
    aggregator = Aggregator()
    first = worker(1, [0.01, 0.01])
    other = worker(2, [0.01])
    totals, _ = aggregator.observe([first, other])
    assert sum(totals.requests.values()) == 5  # 3 + 2, 404s included
    totals, current = aggregator.observe([None, other])  # slot 0 read torn: its last report stands
    assert sum(totals.requests.values()) == 5 and current[0] is first
    restarted = worker(3, [0.01])  # a new process in slot 0 counts from zero
    totals, _ = aggregator.observe([restarted, other])
    assert sum(totals.requests.values()) == 3 + 2 + 2
    assert totals.workers == 2 and totals.connections_open == 4  # gauges: live processes only
    totals, _ = aggregator.observe([restarted, other])  # counted once, not again on each look
    assert sum(totals.requests.values()) == 7
    assert sum(totals.duration[("site", "web")][0]) == 4


def test_dropped_telemetry_sums_over_workers_and_outlives_a_replaced_worker() -> None:
    def dropping(pid: int, lines: int, spans: int) -> dict[str, Any]:
        return worker(pid, [], telemetry_dropped=[["access_log", lines], ["spans", spans]])

    def dropped(found: dict[Any, float], signal: str) -> float:
        return found[("portway_telemetry_dropped_total", (("signal", signal),))]

    found = rendered([dropping(1, 7, 0), dropping(2, 5, 300)])
    assert (dropped(found, "access_log"), dropped(found, "spans")) == (12, 300)
    quiet = rendered([worker(1, [])])  # nothing dropped: both signals have a sample all the same
    assert (dropped(quiet, "access_log"), dropped(quiet, "spans")) == (0, 0)
    aggregator = Aggregator()
    aggregator.observe([dropping(1, 7, 1)])
    totals, _ = aggregator.observe([dropping(3, 2, 0)])  # slot 0 restarted, counting from zero
    assert totals.telemetry_dropped == {("access_log",): 9, ("spans",): 1}
