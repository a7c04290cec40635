"""The health board: one writer, readers in other processes, layouts that must agree."""

from __future__ import annotations

import logging
import os

import pytest

from portway.config.model import Config
from portway.health import Board, BoardSink, Change, HealthState, Layout
from tests.unit.health.support import healthy_flags, services

UNHEALTHY, HEALTHY, UNKNOWN = HealthState.UNHEALTHY, HealthState.HEALTHY, HealthState.UNKNOWN


SPEC = {"users": ["10.0.0.1:80", "10.0.0.2:80"], "carts": ["10.0.1.1:80"]}


# -- layout ----------------------------------------------------------------------------------------


def test_slots_follow_services_sorted_by_name_then_instance_order() -> None:
    layout = Layout.of(SPEC)
    assert layout.services == (
        ("carts", ("10.0.1.1:80",)),
        ("users", ("10.0.0.1:80", "10.0.0.2:80")),
    )
    assert [layout.slot("carts", 0), layout.slot("users", 0), layout.slot("users", 1)] == [0, 1, 2]
    assert layout.slot("users", 2) is None and layout.slot("nope", 0) is None
    assert layout.size == 3


def test_the_fingerprint_changes_with_names_addresses_and_order_only() -> None:
    base = Layout.of(SPEC).fingerprint
    assert Layout.of(dict(reversed(SPEC.items()))).fingerprint == base  # dict order is irrelevant
    assert Layout.of({**SPEC, "users": ["10.0.0.2:80", "10.0.0.1:80"]}).fingerprint != base
    assert Layout.of({**SPEC, "users": ["10.0.0.1:80", "10.0.0.3:80"]}).fingerprint != base
    assert Layout.of({"user": SPEC["users"], "carts": SPEC["carts"]}).fingerprint != base
    # No boundary can shift: ("a", ["x"]), ("b", []) differs from ("a", []), ("b", ["x"]).
    assert (
        Layout.of({"a": ["x:1"], "b": []}).fingerprint
        != Layout.of({"a": [], "b": ["x:1"]}).fingerprint
    )


def test_the_layout_of_a_config_matches_the_layout_of_its_endpoints() -> None:
    config = Config.model_validate(
        {
            "listeners": [{"address": "127.0.0.1:0"}],
            "services": {"v6": {"instances": ["[::1]:8080", " 10.0.0.1:80 "]}},
            "routes": [{"path": "/", "service": "v6"}],
        }
    )
    from_endpoints = Layout.from_services(services({"v6": ["[::1]:8080", "10.0.0.1:80"]}))
    assert Layout.from_config(config).fingerprint == from_endpoints.fingerprint


# -- one process -----------------------------------------------------------------------------------


def test_a_reader_applies_changed_slots_and_reports_each_change() -> None:
    board = Board(capacity=16)
    svcs = services(SPEC)
    reader = board.reader()
    assert reader.apply(svcs) == []  # nothing laid out yet: the fingerprint (zeros) differs
    sink = BoardSink(board)
    sink.reset(Layout.of(SPEC), {})
    assert reader.apply(svcs) == []  # all unknown: healthy as they were
    sink.publish("users", 1, "10.0.0.2:80", UNHEALTHY)
    sink.publish("carts", 0, "10.0.1.1:80", HEALTHY)
    assert reader.apply(svcs) == [Change("users", "10.0.0.2:80", False)]
    assert healthy_flags(svcs) == {"users": [True, False], "carts": [True]}
    assert reader.apply(svcs) == []  # unchanged sequence: nothing read
    sink.publish("users", 1, "10.0.0.2:80", HEALTHY)
    assert reader.apply(svcs) == [Change("users", "10.0.0.2:80", True)]


def test_new_service_objects_get_every_state_at_once() -> None:
    board = Board(capacity=16)
    sink = BoardSink(board)
    sink.reset(Layout.of(SPEC), {("users", 0): UNHEALTHY})
    reader = board.reader()
    first = services(SPEC)
    assert reader.apply(first) == [Change("users", "10.0.0.1:80", False)]
    reloaded = services(SPEC)  # a reload built new endpoints, healthy by default
    assert reader.apply(reloaded) == [Change("users", "10.0.0.1:80", False)]
    assert healthy_flags(reloaded) == {"users": [False, True], "carts": [True]}


def test_a_layout_for_another_config_applies_nothing() -> None:
    board = Board(capacity=16)
    other = {**SPEC, "users": ["10.0.0.1:80", "10.0.0.9:80"]}  # the prober has reloaded
    BoardSink(board).reset(Layout.of(other), {("users", 0): UNHEALTHY, ("users", 1): UNHEALTHY})
    svcs = services(SPEC)  # this worker has not
    assert board.reader().apply(svcs) == []
    assert healthy_flags(svcs) == {"users": [True, True], "carts": [True]}


def test_a_layout_being_written_is_not_read() -> None:
    board = Board(capacity=16)
    BoardSink(board).reset(Layout.of(SPEC), {("users", 0): UNHEALTHY})
    board._set_sequence(board.sequence | 1)  # the writer is in the middle of lay_out
    svcs = services(SPEC)
    reader = board.reader()
    assert reader.apply(svcs) == []
    board._set_sequence(board.sequence + 1)
    assert reader.apply(svcs) == [Change("users", "10.0.0.1:80", False)]


def test_a_recovered_endpoint_starts_its_slow_start_ramp() -> None:
    board = Board(capacity=16)
    sink = BoardSink(board)
    sink.reset(Layout.of(SPEC), {("carts", 0): UNHEALTHY})
    svcs = services(SPEC, slow_start=30.0)
    reader = board.reader()
    reader.apply(svcs)
    assert svcs["carts"].endpoints[0].ramp_start == 0.0
    sink.publish("carts", 0, "10.0.1.1:80", HEALTHY)
    reader.apply(svcs)
    assert svcs["carts"].endpoints[0].ramp_start > 0.0


def test_beyond_capacity_is_an_error_in_the_log_and_those_instances_stay_healthy(
    caplog: pytest.LogCaptureFixture,
) -> None:
    board = Board(capacity=2)
    sink = BoardSink(board)
    with caplog.at_level(logging.ERROR, logger="portway.health"):
        sink.reset(Layout.of(SPEC), {("users", 0): UNHEALTHY, ("users", 1): UNHEALTHY})
    assert "holds 2 instances and the config has 3" in caplog.text
    sink.publish("users", 1, "10.0.0.2:80", UNHEALTHY)  # slot 2: dropped, no crash
    svcs = services(SPEC)
    assert board.reader().apply(svcs) == [Change("users", "10.0.0.1:80", False)]
    assert healthy_flags(svcs) == {"users": [False, True], "carts": [True]}


def test_capacity_is_bounded() -> None:
    with pytest.raises(ValueError, match="capacity must be from 1 to 65536"):
        Board(capacity=65_537)


def test_recall_returns_states_only_for_the_same_layout() -> None:
    board = Board(capacity=16)
    sink = BoardSink(board)
    sink.reset(Layout.of(SPEC), {("users", 1): UNHEALTHY, ("carts", 0): HEALTHY})
    assert sink.recall(Layout.of(SPEC)) == {("users", 1): UNHEALTHY, ("carts", 0): HEALTHY}
    assert sink.recall(Layout.of({"users": SPEC["users"]})) == {}


# -- across processes ------------------------------------------------------------------------------


def test_a_forked_writer_reaches_a_reader_in_the_parent() -> None:
    board = Board(capacity=16)
    pid = os.fork()
    if pid == 0:  # the prober's side
        code = 1
        try:
            sink = BoardSink(board)
            sink.reset(Layout.of(SPEC), {})
            sink.publish("users", 0, "10.0.0.1:80", UNHEALTHY)
            sink.publish("carts", 0, "10.0.1.1:80", UNHEALTHY)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    svcs = services(SPEC)
    changes = board.reader().apply(svcs)
    assert changes == [Change("carts", "10.0.1.1:80", False), Change("users", "10.0.0.1:80", False)]


def test_writes_after_the_fork_reach_a_reader_in_the_child() -> None:
    board = Board(capacity=16)
    go_read, go_write = os.pipe()
    result_read, result_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a worker's side: reads once told the parent has written
        code = 1
        try:
            os.read(go_read, 1)
            svcs = services(SPEC)
            changes = board.reader().apply(svcs)
            os.write(
                result_write, repr([(c.service, c.address, c.healthy) for c in changes]).encode()
            )
            code = 0
        finally:
            os._exit(code)
    os.close(result_write)
    sink = BoardSink(board)
    sink.reset(Layout.of(SPEC), {})
    sink.publish("users", 1, "10.0.0.2:80", UNHEALTHY)
    os.write(go_write, b"!")
    seen = os.read(result_read, 4096).decode()
    _, status = os.waitpid(pid, 0)
    for fd in (go_read, go_write, result_read):
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
    assert seen == "[('users', '10.0.0.2:80', False)]"
