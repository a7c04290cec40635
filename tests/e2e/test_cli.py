"""The ``portway`` command as a user runs it: ``python -m portway ...`` in a subprocess.

validate, routes and explain read a config file and print; run serves it (supervisor and workers);
demo starts example services and a gateway, prints curl lines, and stops on Ctrl-C. The demo's curl
lines are not run with curl: they are parsed and the requests they describe are sent with the test
client, so what the demo promises a newcomer is what is checked.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support.admin import admin_get
from tests.support.backends import Backend
from tests.support.client import Response, request
from tests.support.processes import PortwayProcess, free_port, run_portway

COMMAND_TIMEOUT = 60.0
DEMO_START_TIMEOUT = 20.0
DEMO_STOP_TIMEOUT = 10.0
DEMO_STOPPING_LINE = "stopping: draining the gateway, then the example services"


def portway(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m portway ARGS`` to completion; stdout and stderr as text."""
    return subprocess.run(
        [sys.executable, "-m", "portway", *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
        check=False,
    )


def plain(text: str) -> str:
    """``text`` without rich's box drawing and with whitespace collapsed: wrapping-proof."""
    return " ".join(re.sub(r"[\u2500-\u257f]", " ", text).split())


def position_of(text: str, needle: str) -> tuple[int, int]:
    """1-based line and column of the first ``needle`` in ``text``."""
    offset = text.index(needle)
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, column


def write_config(folder: Path, text: str, name: str = "portway.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


# -- validate ------------------------------------------------------------------------------------

GOOD_CONFIG = """\
listeners:
  - address: "127.0.0.1:18080"
  - {address: "127.0.0.1:18081", name: second}
services:
  users: {instances: ["10.1.0.11:8000", {address: "10.1.0.12:8000", weight: 3}]}
  carts: {instances: ["10.1.0.21:8000"], algorithm: maglev, hash_on: {cookie: session}}
  web: {instances: ["10.1.0.31:8000"], sticky: {cookie: web_pin}}
routes:
  - {name: users, hosts: [api.example.com], path: /users, service: users}
  - {name: carts, path: /carts, methods: [GET, POST], service: carts}
  - {name: report, path: '/reports/\\d+', path_type: regex, service: web}
  - {name: site, path: /, service: web}
"""


def test_validate_accepts_a_good_file_and_names_the_counts(tmp_path: Path) -> None:
    path = write_config(tmp_path, GOOD_CONFIG)
    result = portway("validate", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{path}: valid (4 routes, 3 services, 2 listeners)"]
    assert result.stderr == ""  # no warnings for a clean file


# Four problems that do not depend on each other, each on a line of its own. The position a
# problem is reported at is the key of the offending field.
BAD_CONFIG = """\
listeners:
  - address: "127.0.0.1:18080"
    colour: blue
services:
  users:
    instances: ["10.1.0.11:8000"]
    connect_timeout: 5 parsecs
routes:
  - {name: lost, path: /a, service: nosuch}
  - {name: broken, path: '/b/(', path_type: regex, service: users}
"""


@dataclass(frozen=True)
class Problem:
    field: str  # the field path as printed
    anchor: str  # text in BAD_CONFIG whose position the problem is reported at
    message: str  # a fragment of the printed reason


BAD_CONFIG_PROBLEMS = [
    Problem("listeners[0].colour", "colour:", "unknown key 'colour'"),
    Problem("services.users.connect_timeout", "connect_timeout:", "expected a duration"),
    Problem("routes[0].service", "service: nosuch", "unknown service 'nosuch'"),
    Problem("routes[1].path", "path: '/b/('", "invalid regular expression"),
]


def problem_lines(stderr: str, path: Path) -> dict[tuple[int, int, str], str]:
    """``FILE:LINE:COL: FIELD: why`` lines of ``stderr``, keyed by (line, column, field)."""
    pattern = re.compile(rf"^\s*{re.escape(str(path))}:(\d+):(\d+): ([^:\s]+): (.+)$")
    found: dict[tuple[int, int, str], str] = {}
    for line in stderr.splitlines():
        match = pattern.match(line)
        if match:
            found[(int(match.group(1)), int(match.group(2)), match.group(3))] = match.group(4)
    return found


def expected_problem(problem: Problem) -> tuple[int, int, str]:
    line, column = position_of(BAD_CONFIG, problem.anchor)
    return line, column, problem.field


def test_validate_lists_every_independent_problem_with_its_position(tmp_path: Path) -> None:
    """README: ``validate`` exits 1 "listing every problem: file:line:column: field: why"."""
    path = write_config(tmp_path, BAD_CONFIG)
    result = portway("validate", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    found = problem_lines(result.stderr, path)
    expected = {expected_problem(p): p.message for p in BAD_CONFIG_PROBLEMS}
    missing = sorted(set(expected) - set(found))
    assert not missing, f"problems not reported: {missing}\nstderr:\n{result.stderr}"
    for key, message in expected.items():
        assert message in found[key], f"{key}: {found[key]!r}"
    assert f"{path}: {len(BAD_CONFIG_PROBLEMS)} problems found:" in result.stderr
    assert len(found) == len(BAD_CONFIG_PROBLEMS), result.stderr


@pytest.mark.parametrize("problem", BAD_CONFIG_PROBLEMS, ids=lambda p: p.field)
def test_validate_reports_each_problem_alone_at_its_position(
    tmp_path: Path, problem: Problem
) -> None:
    """Each problem of ``BAD_CONFIG`` in an otherwise valid file: exactly that one is reported."""
    good_lines = {
        "colour:": "    name: first",
        "connect_timeout:": "    connect_timeout: 5s",
        "service: nosuch": "  - {name: lost, path: /a, service: users}",
        "path: '/b/('": "  - {name: broken, path: '/b/\\(', path_type: regex, service: users}",
    }
    lines = BAD_CONFIG.splitlines()
    for anchor, replacement in good_lines.items():
        if anchor != problem.anchor:
            index = next(i for i, line in enumerate(lines) if anchor in line)
            lines[index] = replacement
    path = write_config(tmp_path, "\n".join(lines) + "\n")
    result = portway("validate", str(path))
    assert result.returncode == 1
    found = problem_lines(result.stderr, path)
    assert list(found) == [expected_problem(problem)], result.stderr
    assert problem.message in next(iter(found.values()))
    assert f"{path}: 1 problem found:" in result.stderr


def test_validate_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    result = portway("validate", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"{path}: file not found" in result.stderr
    assert "Traceback" not in result.stderr


# -- routes --------------------------------------------------------------------------------------

ROUTES_CONFIG = """\
services:
  api: {instances: ["127.0.0.1:9001"]}
  web: {instances: ["127.0.0.1:9002"]}
routes:
  - {name: wild-root, hosts: ["*.example.com"], path: /, service: web}
  - {name: fallback, path: /, service: web}
  - {name: api-short, hosts: [api.example.com], path: /v1, service: api}
  - {name: api-long, hosts: [api.example.com], path: /v1/users/, service: api}
  - {name: api-item, hosts: [api.example.com], path: '/v1/items/\\d+', path_type: regex, service: api}
  - {name: api-any, hosts: [api.example.com], path: '/v1/.*', path_type: regex, service: web}
  - {name: api-health, hosts: [api.example.com], path: /health, path_type: exact, service: web}
  - name: api-canary
    hosts: [api.example.com]
    path: /v1
    headers: [{name: x-canary, exact: "1"}]
    service: web
"""


def test_routes_prints_the_table_in_the_order_rules_are_tried(tmp_path: Path) -> None:
    """Exact host, then wildcard host, then any host; in a table exact, regex in declared order,
    prefix longest first, and on one prefix the route with more matchers first. The config
    declares them in a different order, so the printed order is the table's, not the file's."""
    result = portway("routes", str(write_config(tmp_path, ROUTES_CONFIG)))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()

    # Every line of the output, in order: a section title or "PATH  -> SERVICE  [ROUTE] ..."
    expected = [
        ["host", "table", "api.example.com:"],
        ["exact:"],
        ["/health", "->", "web", "[api-health]"],
        ["regex", "(in", "order):"],
        ["/v1/items/\\d+", "->", "api", "[api-item]"],  # declared before api-any
        ["/v1/.*", "->", "web", "[api-any]"],
        ["prefix", "(longest", "first):"],
        ["/v1/users/", "->", "api", "[api-long]"],
        ["/v1", "->", "web", "[api-canary]", "if", "header", "x-canary", "==", "'1'"],
        ["/v1", "->", "api", "[api-short]"],  # same prefix, no matchers: after api-canary
        ["host", "table", "*.example.com:"],  # declared first, tried after the exact host
        ["prefix", "(longest", "first):"],
        ["/", "->", "web", "[wild-root]"],
        ["host", "table", "for", "any", "host:"],  # declared second, tried last
        ["prefix", "(longest", "first):"],
        ["/", "->", "web", "[fallback]"],
    ]
    assert [line.split() for line in lines] == expected, result.stdout
    # Routes are indented under their section title.
    indents = {len(line) - len(line.lstrip()) for line in lines if line.lstrip().startswith("/")}
    assert indents == {4}


# -- explain -------------------------------------------------------------------------------------

# The README's example config, with the maglev service keyed by a header.
README_STYLE_CONFIG = """\
listeners:
  - address: "127.0.0.1:18080"
services:
  users:
    instances: ["10.1.0.11:8000", {address: "10.1.0.12:8000", weight: 3}]
    algorithm: least_request
  carts:
    instances: ["10.1.0.21:8000", "10.1.0.22:8000"]
    algorithm: maglev
    hash_on: {header: x-user}
  web:
    instances: ["10.1.0.31:8000"]
    sticky: {cookie: web_pin, max_age: 1h}
routes:
  - {name: users, hosts: [api.example.com], path: /users, service: users}
  - name: users-canary
    hosts: [api.example.com]
    path: /users
    headers: [{name: x-canary, exact: "1"}]
    service: carts
  - {name: carts, path: /carts, methods: [GET, POST], service: carts}
  - {name: report, path: '/reports/\\d+', path_type: regex, service: web}
  - {name: site, path: /, service: web}
"""


def explain_lines(tmp_path: Path, config: str, *args: str) -> list[str]:
    result = portway("explain", str(write_config(tmp_path, config)), *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_explain_names_winner_loser_service_algorithm_and_hash_key(tmp_path: Path) -> None:
    lines = explain_lines(
        tmp_path,
        README_STYLE_CONFIG,
        "GET https://api.example.com/users/7",
        "-H", "x-canary: 1",
        "-H", "x-user: ann",
    )  # fmt: skip
    assert lines == [
        "request: GET api.example.com/users/7",
        "result: route users-canary -> carts (prefix /users)",
        "  because path /users/7 matches prefix /users and header x-canary == '1'",
        "tried and lost:",
        "  users  not tried: users-canary was selected first",
        "service: carts (2 instances: 10.1.0.21:8000 w1, 10.1.0.22:8000 w1)",
        "balancing: maglev",
        "hash key: header x-user = 'ann'",
    ]


def test_explain_without_the_canary_header_loses_the_canary_route(tmp_path: Path) -> None:
    lines = explain_lines(tmp_path, README_STYLE_CONFIG, "GET https://api.example.com/users/7")
    assert lines == [
        "request: GET api.example.com/users/7",
        "result: route users -> users (prefix /users)",
        "  because path /users/7 matches prefix /users",
        "tried and lost:",
        "  users-canary  path matches prefix /users but header x-canary absent",
        "service: users (2 instances: 10.1.0.11:8000 w1, 10.1.0.12:8000 w3)",
        "balancing: least_request",
    ]


def test_explain_a_hostless_regex_route_with_a_sticky_service(tmp_path: Path) -> None:
    lines = explain_lines(
        tmp_path,
        README_STYLE_CONFIG,
        "http://www.example.com/reports/12",
        "-H",
        "cookie: web_pin=k1",
    )
    assert lines[:3] == [
        "request: GET www.example.com/reports/12",  # no method given: GET
        "result: route report -> web (regex /reports/\\d+)",
        "  because path /reports/12 matches regex /reports/\\d+",
    ]
    assert "  (no host table for www.example.com)" in lines
    assert lines[-3:] == [
        "service: web (1 instance: 10.1.0.31:8000 w1)",
        "balancing: round_robin",
        "sticky: cookie web_pin = 'k1'",
    ]


def test_explain_says_when_no_route_matches(tmp_path: Path) -> None:
    config = README_STYLE_CONFIG.replace("  - {name: site, path: /, service: web}\n", "")
    lines = explain_lines(tmp_path, config, "DELETE http://shop.example.org/carts/9")
    assert lines[:2] == [
        "request: DELETE shop.example.org/carts/9",
        "result: no route matched (404)",
    ]
    lost = [line.split(None, 1) for line in lines[lines.index("tried and lost:") + 1 :]]
    assert ["carts", "path matches prefix /carts but method DELETE not in {GET, POST}"] in lost
    assert ["report", "path /carts/9 does not match regex /reports/\\d+"] in lost
    assert not any(line.startswith(("service:", "balancing:")) for line in lines)


def test_explain_rejects_a_malformed_header_argument(tmp_path: Path) -> None:
    path = write_config(tmp_path, README_STYLE_CONFIG)
    result = portway(
        "explain", str(path), "GET https://api.example.com/users/7", "-H", "x-canary 1"
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert "header 'x-canary 1' is not 'Name: value'" in result.stderr


# -- run -----------------------------------------------------------------------------------------


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def wait_until(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_run_listen_overrides_the_config_listeners() -> None:
    config_port = free_port()
    with Backend("web") as backend:
        config = (
            f'listeners: [{{address: "127.0.0.1:{config_port}"}}]\n'
            f'services:\n  web: {{instances: ["{backend.address}"]}}\n'
            "routes:\n  - {path: /, service: web}\n"
        )
        args = ["--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0"]
        with run_portway(config, extra_args=args) as gw:
            assert wait_until(lambda: len(gw.listening) == 2), gw.stderr_text()
            ports = [port for _, port in gw.listening]
            assert len(set(ports)) == 2 and config_port not in ports and 0 not in ports
            assert all(host == "127.0.0.1" for host, _ in gw.listening)
            for port in ports:
                response = request(port, "GET", f"/via/{port}")
                assert response.status == 200
                echo = response.json()
                assert echo["target"] == f"/via/{port}"
                assert echo["headers"]["x-forwarded-port"] == str(port)
            assert refused(config_port)  # the config's own listener is not served


def test_run_rejects_zero_workers(tmp_path: Path) -> None:
    path = write_config(tmp_path, GOOD_CONFIG)
    result = portway("run", "--config", str(path), "--workers", "0")
    assert result.returncode == 2
    message = plain(result.stderr)
    assert "'--workers'" in message and "greater than or equal to 1" in message, result.stderr
    assert "listening on" not in result.stderr


def test_run_rejects_a_malformed_listen_address_readably(tmp_path: Path) -> None:
    path = write_config(tmp_path, GOOD_CONFIG)
    result = portway("run", "--config", str(path), "--listen", "nope")
    assert result.returncode == 2
    assert result.stderr.strip() == "--listen: expected 'host:port' with a port, got 'nope'"


# -- demo ----------------------------------------------------------------------------------------


@dataclass
class CurlLine:
    """What one printed ``curl`` line asks for, as the test client will send it."""

    text: str
    method: str
    path: str
    host: str
    port: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    cookie_jar: bool = False


def parse_curl(text: str) -> CurlLine:
    """The options the demo prints (-s -i -d -H -c -b) and a URL; '#' starts a comment."""
    words = shlex.split(text, comments=True)
    assert words[0] == "curl", text
    headers: list[tuple[str, str]] = []
    body: bytes | None = None
    url = ""
    cookie_jar = False
    rest = iter(words[1:])
    for word in rest:
        if word in ("-s", "-i"):
            continue
        if word == "-d":
            body = next(rest).encode()
        elif word == "-H":
            name, _, value = next(rest).partition(":")
            headers.append((name.strip(), value.strip()))
        elif word in ("-c", "-b"):
            next(rest)
            cookie_jar = True
        elif word.startswith("http://"):
            url = word
        else:
            raise AssertionError(f"unexpected curl argument {word!r} in {text!r}")
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None, text
    host = next((v for n, v in headers if n.lower() == "host"), parts.netloc)
    headers = [(n, v) for n, v in headers if n.lower() != "host"]
    if body is not None:  # what curl -d sends
        headers.append(("Content-Type", "application/x-www-form-urlencoded"))
    return CurlLine(
        text=text,
        method="POST" if body is not None else "GET",
        path=parts.path + (f"?{parts.query}" if parts.query else ""),
        host=host,
        port=parts.port,
        headers=headers,
        body=body or b"",
        cookie_jar=cookie_jar,
    )


class Demo:
    """A running ``portway demo`` in its own process group, with what it printed."""

    def __init__(self, port: int) -> None:
        self.port = port
        argv = [sys.executable, "-m", "portway", "demo", "--listen", f"127.0.0.1:{port}",
                "--admin", "127.0.0.1:0"]  # fmt: skip
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        # PortwayProcess reads both streams in threads and stops the whole group on ``stop``.
        self.process = PortwayProcess(proc, Path(os.devnull))

    @property
    def stdout(self) -> list[str]:
        return list(self.process.stdout_lines)

    def wait_for_curl_lines(self, timeout: float = DEMO_START_TIMEOUT) -> list[CurlLine]:
        deadline = time.monotonic() + timeout
        while "Ctrl-C stops everything." not in self.stdout:
            if self.process.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"demo printed no curl lines (exit status {self.process.proc.poll()});\n"
                    f"stdout:\n{chr(10).join(self.stdout)}\nstderr:\n{self.process.stderr_text()}"
                )
            time.sleep(0.05)
        return [parse_curl(line.strip()) for line in self.stdout if line.startswith("  curl ")]

    def stop(self) -> int:
        return self.process.stop()


@pytest.fixture(scope="module")
def demo() -> Iterator[tuple[Demo, dict[str, CurlLine]]]:
    """One demo for the request tests, its curl lines by the path they request."""
    running = Demo(free_port())
    try:
        lines = running.wait_for_curl_lines()
        yield running, {line.path: line for line in lines}
    finally:
        running.stop()


def send(line: CurlLine, cookie: str | None = None) -> Response:
    headers = list(line.headers)
    if cookie is not None:
        headers.append(("Cookie", cookie))
    return request(
        line.port, line.method, line.path, headers=headers, body=line.body, host=line.host
    )


def echo_of(response: Response) -> dict[str, Any]:
    assert response.status == 200, (response.status, response.headers, response.body)
    answer: dict[str, Any] = json.loads(response.body)
    return answer


def test_demo_prints_its_address_and_a_curl_line_per_feature(
    demo: tuple[Demo, dict[str, CurlLine]],
) -> None:
    running, lines = demo
    assert f"Portway demo: gateway on http://127.0.0.1:{running.port}" in running.stdout
    assert sorted(lines) == [
        "/account",
        "/anything",
        "/nowhere",
        "/orders",
        "/payments",
        "/users/42",
    ]
    assert all(line.port == running.port for line in lines.values())
    for service in ("users", "payments", "orders"):
        assert any(re.match(rf"  service {service} +instances 127\.0\.0\.1:\d+, 127\.0\.0\.1:\d+$", s)
                   for s in running.stdout), running.stdout  # fmt: skip


def test_demo_users_line_reaches_both_users_instances(
    demo: tuple[Demo, dict[str, CurlLine]],
) -> None:
    line = demo[1]["/users/42"]
    first = send(line)
    answer = echo_of(first)
    assert answer["service"] == "users"
    assert answer["instance"] in ("users-1", "users-2")
    assert answer["path"] == "/users/42"
    # The headers the gateway added, as the demo promises to show them.
    assert answer["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert answer["headers"]["x-request-id"] == first.header("x-request-id")
    instances = [echo_of(send(line))["instance"] for _ in range(10)]
    assert set(instances) == {"users-1", "users-2"}, instances


def test_demo_payments_line_posts_to_payments(demo: tuple[Demo, dict[str, CurlLine]]) -> None:
    answer = echo_of(send(demo[1]["/payments"]))
    assert answer["service"] == "payments"
    assert answer["instance"] in ("payments-1", "payments-2")
    assert answer["method"] == "POST"
    assert answer["headers"]["content-length"] == str(len(b"amount=10"))


def test_demo_orders_line_sets_a_sticky_cookie_that_pins_the_instance(
    demo: tuple[Demo, dict[str, CurlLine]],
) -> None:
    line = demo[1]["/orders"]
    assert line.cookie_jar  # the printed line keeps cookies between runs
    first = send(line)
    answer = echo_of(first)
    assert answer["service"] == "orders"
    set_cookie = first.header("set-cookie")
    assert set_cookie is not None
    match = re.match(r"demo_orders=([0-9a-f]+);", set_cookie)
    assert match, set_cookie  # an opaque key, never the instance's address
    attributes = {a.strip() for a in set_cookie.split(";")[1:]}
    assert {"Path=/", "HttpOnly"} <= attributes, set_cookie
    pinned = answer["instance"]
    for _ in range(8):
        again = send(line, cookie=f"demo_orders={match.group(1)}")
        assert echo_of(again)["instance"] == pinned
        assert again.header("set-cookie") is None  # already pinned: no new cookie
    # Without the cookie the balancer spreads requests over both instances again.
    assert {echo_of(send(line))["instance"] for _ in range(6)} == {"orders-1", "orders-2"}


def test_demo_host_rule_sends_everything_for_payments_localhost_to_payments(
    demo: tuple[Demo, dict[str, CurlLine]],
) -> None:
    line = demo[1]["/anything"]
    assert line.host == "payments.localhost"
    answer = echo_of(send(line))
    assert answer["service"] == "payments"
    assert answer["path"] == "/anything"
    assert answer["headers"]["host"] == "payments.localhost"
    # The host's own table comes before the host-less routes, even for a path they would take.
    users_line = demo[1]["/users/42"]
    on_host = request(users_line.port, "GET", "/users/42", host="payments.localhost")
    assert echo_of(on_host)["service"] == "payments"


def test_demo_nowhere_line_is_a_404_with_a_request_id(
    demo: tuple[Demo, dict[str, CurlLine]],
) -> None:
    response = send(demo[1]["/nowhere"])
    assert response.status == 404
    assert response.header("portway-error") == "no_route"
    request_id = response.header("x-request-id")
    assert request_id is not None and re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert response.body.decode() == (
        f"404 Not Found: no route matches this host and path\nrequest id: {request_id}\n"
    )


def test_demo_account_line_needs_its_key_and_is_rate_limited(
    demo: tuple[Demo, dict[str, CurlLine]],
) -> None:
    line = demo[1]["/account"]
    answers = [send(line) for _ in range(6)]
    assert [a.status for a in answers] == [200] * 5 + [429]
    assert echo_of(answers[0])["headers"]["x-portway-consumer"] == "demo-user"
    assert answers[0].header("ratelimit-policy") == '"demo-quota";q=5;w=10'
    assert answers[5].header("portway-error") == "rate_limited"
    keyless = request(line.port, "GET", "/account")
    assert keyless.status == 401 and keyless.header("portway-error") == "missing_credentials"


def test_a_second_demo_on_the_same_port_fails_readably(
    demo: tuple[Demo, dict[str, CurlLine]],
) -> None:
    running, lines = demo
    result = portway("demo", "--listen", f"127.0.0.1:{running.port}", "--admin", "none")
    assert result.returncode == 1
    assert (
        f"cannot listen on 127.0.0.1:{running.port}: Address already in use "
        "(try --listen 127.0.0.1:8081)"
    ) in result.stderr
    assert "Traceback" not in result.stderr
    assert "curl" not in result.stdout
    assert send(lines["/nowhere"]).status == 404  # the first demo still serves


def demo_admin_port(running: Demo) -> int:
    printed = [line for line in running.stdout if line.startswith("admin on http://")]
    assert len(printed) == 1, running.stdout
    pattern = r"admin on http://127\.0\.0\.1:(\d+): /services /routes\?format=text /metrics$"
    match = re.match(pattern, printed[0])
    assert match, printed
    return int(match.group(1))


def test_demo_serves_the_admin_api_it_prints(demo: tuple[Demo, dict[str, CurlLine]]) -> None:
    port = demo_admin_port(demo[0])
    services = admin_get(port, "/services").json()["services"]
    assert sorted(s["name"] for s in services) == ["orders", "payments", "users"]
    assert all(len(s["instances"]) == 2 for s in services)
    assert admin_get(port, "/readyz").status == 200


def test_a_second_demo_on_the_same_admin_port_fails_readably(
    demo: tuple[Demo, dict[str, CurlLine]],
) -> None:
    admin = f"127.0.0.1:{demo_admin_port(demo[0])}"
    result = portway("demo", "--listen", f"127.0.0.1:{free_port()}", "--admin", admin)
    assert result.returncode == 1
    assert (
        f"cannot listen on admin {admin}: Address already in use "
        "(try --admin 127.0.0.1:9902, or --admin none)"
    ) in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_stops_on_ctrl_c_and_exits_zero() -> None:
    running = Demo(free_port())
    try:
        running.wait_for_curl_lines()
        os.killpg(running.process.pgid, signal.SIGINT)  # what Ctrl-C in a terminal does
        started = time.monotonic()
        assert running.process.proc.wait(DEMO_STOP_TIMEOUT) == 0
        assert time.monotonic() - started < DEMO_STOP_TIMEOUT
        assert running.stop() == 0  # also waits for the output readers
        assert DEMO_STOPPING_LINE in running.stdout
        assert refused(running.port)
        assert "Traceback" not in running.process.stderr_text()
    finally:
        running.stop()
