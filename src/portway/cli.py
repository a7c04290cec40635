"""The ``portway`` command: run, controller, validate, routes, explain, demo, top, certs,
hash-password."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn
from urllib.parse import urlsplit

import typer
from pydantic import ValidationError

from portway.config.loader import load_config
from portway.config.model import Config, ListenerConfig, ServiceConfig
from portway.config.observability import AdminConfig
from portway.errors import ConfigError
from portway.messages import Request
from portway.policies.basic_auth import DEFAULT_ITERATIONS, hash_password
from portway.routing import (
    compile_routes,
    explain,
    normalize_path,
    render_explanation,
    render_table,
)

if TYPE_CHECKING:
    from portway.kubernetes import Options
    from portway.kubernetes.live import LiveOptions

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Portway: an ingress controller that routes between services and balances within each.",
)


def _setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("portway[%(process)d] %(levelname)s %(message)s"))
    root = logging.getLogger("portway")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _load_or_exit(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        count = len(exc.issues)
        typer.echo(f"{path}: {count} problem{'s' if count != 1 else ''} found:", err=True)
        for issue in exc.issues:
            typer.echo(f"  {issue}", err=True)
        raise typer.Exit(1) from None


ConfigArg = Annotated[Path, typer.Argument(help="Native Portway config file (YAML).")]


ManifestsOption = Annotated[
    Path | None,
    typer.Option(
        "--manifests",
        help="Serve the Kubernetes Ingress manifests (*.yaml, *.yml, *.json) under this directory "
        "instead of a native config; changes apply without a restart.",
    ),
]
IngressClassOption = Annotated[
    str, typer.Option(help="With --manifests: the IngressClass name Portway serves.")
]
DefaultBackendOption = Annotated[
    str | None,
    typer.Option(
        help="With --manifests: NAMESPACE/SERVICE:PORT answering requests no Ingress rule "
        "or defaultBackend takes."
    ),
]


@app.command()
def run(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Native config file (YAML).")
    ] = None,
    manifests: ManifestsOption = None,
    listen: Annotated[
        list[str] | None,
        typer.Option(
            "--listen", "-l", help="HOST:PORT to listen on, replacing the config's listeners."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", "-w", min=1, help="Worker processes (default: CPU count)."),
    ] = None,
    admin: Annotated[
        str | None,
        typer.Option(
            "--admin",
            help="HOST:PORT of the admin API, replacing admin.address (default 127.0.0.1:9901); "
            "'none' turns it off.",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
    listen_tls: Annotated[
        str | None, typer.Option(help="With --manifests: HOST:PORT of the HTTPS listener.")
    ] = None,
    ingress_class: IngressClassOption = "portway",
    default_backend: DefaultBackendOption = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            help="With --manifests: where certificates from Secrets and the translated config "
            "are kept (default: a private temporary directory, removed on exit)."
        ),
    ] = None,
) -> None:
    """Serve a config (or Ingress manifests): SIGHUP reloads it, SIGTERM drains and exits 0."""
    from portway.supervisor import Supervisor

    _setup_logging(log_level.upper())
    if (config is None) == (manifests is None):
        _fail("give either --config FILE or --manifests DIR")
    if manifests is not None:
        options = _manifest_options(listen, listen_tls, ingress_class, default_backend, admin)
        raise typer.Exit(_run_manifests(manifests, options, state_dir, workers))
    if listen_tls is not None or default_backend is not None or state_dir is not None:
        _fail("--listen-tls, --default-backend and --state-dir go with --manifests")
    assert config is not None
    cfg = _load_or_exit(config)
    if listen:
        try:
            listeners = [ListenerConfig(address=a) for a in listen]
        except ValidationError as exc:
            typer.echo(f"--listen: {_reason(exc)}", err=True)
            raise typer.Exit(2) from None
        cfg = cfg.model_copy(update={"listeners": listeners})
    if admin is not None:
        address = None if admin.strip().lower() == "none" else admin
        try:
            admin_config = AdminConfig(address=address, token=cfg.admin.token)
        except ValidationError as exc:
            typer.echo(f"--admin: {_reason(exc)}", err=True)
            raise typer.Exit(2) from None
        cfg = cfg.model_copy(update={"admin": admin_config})

    def reload() -> Config:
        # The command line wins over the file on every reload too, so every process (and the
        # config fingerprint the admin API's readiness compares) sees the same config.
        fresh = load_config(config)
        if listen:
            fresh = fresh.model_copy(update={"listeners": cfg.listeners})
        if admin is not None:  # the admin settings stay those checked at start
            fresh = fresh.model_copy(update={"admin": cfg.admin})
        return fresh

    supervisor = Supervisor(cfg, workers or os.cpu_count() or 1, reload=reload)
    raise typer.Exit(supervisor.run())


def _reason(exc: ValidationError) -> str:
    return str(exc.errors()[0]["msg"]).removeprefix("Value error, ")


def _manifest_options(
    listen: list[str] | None,
    listen_tls: str | None,
    ingress_class: str,
    default_backend: str | None,
    admin: str | None,
) -> Options:
    from portway.kubernetes import Options, parse_default_backend

    try:
        addresses = [ListenerConfig(address=a).address for a in listen or ["127.0.0.1:8080"]]
        tls_address = ListenerConfig(address=listen_tls).address if listen_tls else None
    except ValidationError as exc:
        _fail(f"--listen / --listen-tls: {_reason(exc)}")
    admin_config = AdminConfig()
    if admin is not None:
        try:
            admin_config = AdminConfig(address=None if admin.strip().lower() == "none" else admin)
        except ValidationError as exc:
            _fail(f"--admin: {_reason(exc)}")
    if default_backend is not None:
        try:
            parse_default_backend(default_backend)
        except ValueError as exc:
            _fail(f"--default-backend: {exc}")
    return Options(tuple(addresses), tls_address, ingress_class, default_backend, admin_config)


def _run_manifests(
    directory: Path, options: Options, state_dir: Path | None, workers: int | None
) -> int:
    """The supervisor over a manifest directory: the controller builds (and rebuilds on SIGHUP);
    the watcher sends SIGHUP when the directory changes."""
    from portway.kubernetes import DirectoryWatcher, ManifestController
    from portway.supervisor import Supervisor

    folder = state_dir or Path(tempfile.mkdtemp(prefix="portway-manifests-"))
    try:
        controller = ManifestController(directory, options, folder)
        try:
            cfg = controller.build()
        except ConfigError as exc:
            typer.echo(f"{directory}: no config can be made:\n{exc}", err=True)
            return 1
        watcher = DirectoryWatcher(directory)
        watcher.start()  # blocks the supervisor's signals in this thread too: see watch.py
        try:
            return Supervisor(
                cfg,
                workers or os.cpu_count() or 1,
                reload=controller.load,
                extra_stats=controller.stats,
            ).run()
        finally:
            watcher.stop()
    finally:
        if state_dir is None:
            shutil.rmtree(folder, ignore_errors=True)


@app.command()
def controller(
    kubeconfig: Annotated[
        Path | None,
        typer.Option(
            help="kubeconfig file (default: in a pod its service account, else $KUBECONFIG, "
            "else ~/.kube/config)."
        ),
    ] = None,
    context: Annotated[str | None, typer.Option(help="kubeconfig context.")] = None,
    namespace: Annotated[
        str | None, typer.Option(help="Watch this namespace only (default: all).")
    ] = None,
    listen: Annotated[list[str] | None, typer.Option("--listen", "-l", help="HOST:PORT.")] = None,
    listen_tls: Annotated[str | None, typer.Option(help="HOST:PORT of HTTPS.")] = None,
    workers: Annotated[int | None, typer.Option("--workers", "-w", min=1)] = None,
    admin: Annotated[str, typer.Option(help="HOST:PORT of the admin API, or 'none'.")] = (
        "127.0.0.1:9901"
    ),
    admin_token: Annotated[str | None, typer.Option(envvar="PORTWAY_ADMIN_TOKEN")] = None,
    ingress_class: IngressClassOption = "portway",
    default_backend: DefaultBackendOption = None,
    state_dir: Annotated[Path | None, typer.Option(help="Default: a temporary folder.")] = None,
    publish_address: Annotated[
        list[str] | None, typer.Option(help="IP or host name written to Ingress status.")
    ] = None,
    publish_service: Annotated[
        str | None, typer.Option(help="NAMESPACE/NAME of the Service whose address is written.")
    ] = None,
    election_id: Annotated[str, typer.Option(help="Name of the leader election Lease.")] = (
        "portway-leader"
    ),
    election_namespace: Annotated[str | None, typer.Option(help="Default: the pod's.")] = None,
    lease_duration: float = 15.0,
    renew_deadline: float = 10.0,
    retry_period: float = 2.0,
    debounce: Annotated[float, typer.Option(help="Seconds of quiet before a rebuild.")] = 0.2,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
) -> None:
    """Serve a cluster's Ingresses: watch the API server, reload on change, and as the elected
    leader write Ingress status and Events. See docs/kubernetes.md."""
    from portway.kubernetes.live import LiveOptions
    from portway.kubernetes.status import Publish, parse_service_ref

    _setup_logging(log_level.upper())
    options = _manifest_options(listen, listen_tls, ingress_class, default_backend, "none")
    try:
        address = None if admin.strip().lower() == "none" else admin
        options = replace(options, admin=AdminConfig(address=address, token=admin_token))
        service = parse_service_ref(publish_service) if publish_service else None
        live = LiveOptions(
            namespace=namespace, publish=Publish(tuple(publish_address or ()), service),
            election_id=election_id, election_namespace=election_namespace,
            lease_duration=lease_duration, renew_deadline=renew_deadline,
            retry_period=retry_period, debounce=debounce,
        )  # fmt: skip
    except (ValidationError, ValueError) as exc:
        _fail(_reason(exc) if isinstance(exc, ValidationError) else str(exc))
    raise typer.Exit(_run_controller(kubeconfig, context, options, live, state_dir, workers))


def _run_controller(
    kubeconfig: Path | None,
    context: str | None,
    options: Options,
    live_options: LiveOptions,
    state_dir: Path | None,
    workers: int | None,
) -> int:
    """The supervisor over the cluster: the controller thread lists and watches, builds, and
    sends SIGHUP on change (see kubernetes/live.py); the supervisor serves its builds."""
    from portway.kubernetes.api import ApiConfigError, load_config
    from portway.kubernetes.cluster import ClusterController
    from portway.kubernetes.live import LiveController
    from portway.supervisor import Supervisor

    try:
        api_config = load_config(kubeconfig, context)
    except ApiConfigError as exc:
        _fail(str(exc))
    folder = state_dir or Path(tempfile.mkdtemp(prefix="portway-controller-"))
    try:
        cluster = ClusterController(options, folder)
        live = LiveController(cluster, api_config, live_options)
        live.start()  # blocks the supervisor's signals in this thread too: see live.py
        try:
            cfg = live.wait_ready()
            if cfg is None:  # SIGTERM while waiting for the API server, or the thread failed
                return 1 if live.finished.is_set() else 0
            return Supervisor(
                cfg, workers or os.cpu_count() or 1, reload=cluster.load, extra_stats=cluster.stats
            ).run()
        except ConfigError as exc:
            typer.echo(f"no config can be made from the cluster:\n{exc}", err=True)
            return 1
        finally:
            live.stop()
    finally:
        if state_dir is None:
            shutil.rmtree(folder, ignore_errors=True)


@app.command()
def validate(
    config: Annotated[
        Path | None, typer.Argument(help="Native Portway config file (YAML).")
    ] = None,
    manifests: ManifestsOption = None,
    ingress_class: IngressClassOption = "portway",
    default_backend: DefaultBackendOption = None,
) -> None:
    """Check a config file (or a manifest directory); exit non-zero listing every problem found."""
    if (config is None) == (manifests is None):
        _fail("give either a config FILE or --manifests DIR")
    if manifests is not None:
        raise typer.Exit(_validate_manifests(manifests, ingress_class, default_backend))
    assert config is not None
    cfg = _load_or_exit(config)
    table = compile_routes(cfg.routes, cfg.services, merge_slashes=cfg.server.merge_slashes)
    for diagnostic in table.diagnostics:
        typer.echo(f"warning: {diagnostic}", err=True)
    typer.echo(
        f"{config}: valid ({len(cfg.routes)} routes, {len(cfg.services)} services, "
        f"{len(cfg.listeners)} listeners)"
    )


def _validate_manifests(directory: Path, ingress_class: str, default_backend: str | None) -> int:
    from portway.kubernetes import one_shot

    logging.getLogger("portway.kubernetes").addHandler(logging.NullHandler())  # printed below
    # An HTTPS listener (never bound) so that the Secrets' certificates are checked too.
    options = _manifest_options(None, "127.0.0.1:0", ingress_class, default_backend, "none")
    with tempfile.TemporaryDirectory(prefix="portway-validate-") as folder:
        config, report = one_shot(directory, options, Path(folder))
    for issue in report.issues:
        typer.echo(str(issue), err=True)
    if config is not None:
        typer.echo(f"{directory}: {report.summary()}")
    return 1 if report.errors or config is None else 0


class _ServiceView:
    """A service as ``routes`` and ``explain`` show it: a name, no sockets."""

    def __init__(self, name: str, config: ServiceConfig) -> None:
        self.name = name
        self.config = config

    def __str__(self) -> str:
        return self.name


def _views(cfg: Config) -> dict[str, _ServiceView]:
    return {name: _ServiceView(name, sc) for name, sc in cfg.services.items()}


@app.command()
def routes(config: ConfigArg) -> None:
    """Print the compiled routing table: per host, the order rules are tried in."""
    cfg = _load_or_exit(config)
    table = compile_routes(cfg.routes, _views(cfg), merge_slashes=cfg.server.merge_slashes)
    typer.echo(render_table(table))
    for diagnostic in table.diagnostics:
        typer.echo(f"warning: {diagnostic}", err=True)


@app.command("explain")
def explain_command(
    config: ConfigArg,
    request_line: Annotated[str, typer.Argument(help="e.g. 'GET https://api.example.com/users/7'")],
    header: Annotated[
        list[str] | None, typer.Option("--header", "-H", help="'Name: value', repeatable.")
    ] = None,
    client_ip: Annotated[
        str, typer.Option(help="Client address, for client_ip hashing.")
    ] = "127.0.0.1",
) -> None:
    """Which route a request would take and why, and which service and balancing key."""
    cfg = _load_or_exit(config)
    request = _request_from_cli(request_line, header or [], client_ip, cfg.server.merge_slashes)
    table = compile_routes(cfg.routes, _views(cfg), merge_slashes=cfg.server.merge_slashes)
    explanation = explain(table, request)
    typer.echo(render_explanation(explanation))
    route = explanation.route
    if route is not None and route.target is not None:  # None: a redirect, balanced nowhere
        typer.echo(_describe_balancing(route.target, request))


def _fail(message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(2)


def _request_from_cli(
    line: str, headers: list[str], client_ip: str, merge_slashes: bool
) -> Request:
    method, _, url = line.strip().partition(" ")
    if not url:
        method, url = "GET", method
    parts = urlsplit(url if "://" in url else "http://" + url)
    if not parts.hostname:
        _fail(f"cannot read a host in {url!r}")
    try:
        path = normalize_path(parts.path or "/", merge_slashes)
    except ValueError as exc:
        _fail(f"invalid path {parts.path!r}: {exc}")
    raw_headers: list[tuple[bytes, bytes]] = [(b"host", parts.netloc.encode())]
    for h in headers:
        name, sep, value = h.partition(":")
        if not sep:
            _fail(f"header {h!r} is not 'Name: value'")
        raw_headers.append((name.strip().encode(), value.strip().encode()))
    return Request(
        method.upper(), parts.hostname.lower(), path, parts.query, raw_headers, client_ip
    )


def _describe_balancing(service: _ServiceView, request: Request) -> str:
    sc = service.config
    lines = [
        f"service: {service.name} ({len(sc.instances)} instance"
        f"{'' if len(sc.instances) == 1 else 's'}: "
        + ", ".join(f"{i.address} w{i.weight}" for i in sc.instances)
        + ")",
        f"balancing: {sc.algorithm}",
    ]
    if sc.algorithm in ("ring_hash", "maglev"):
        hash_on = sc.hash_on
        if hash_on is None or hash_on.client_ip:
            lines.append(f"hash key: client IP = {request.client_ip}")
        elif hash_on.header is not None:
            value = request.header(hash_on.header)
            lines.append(
                f"hash key: header {hash_on.header} = {value!r}"
                if value is not None
                else f"hash key: header {hash_on.header} is absent: a random instance is picked"
            )
        elif hash_on.cookie is not None:
            value = request.cookie(hash_on.cookie)
            lines.append(
                f"hash key: cookie {hash_on.cookie} = {value!r}"
                if value is not None
                else f"hash key: cookie {hash_on.cookie} is absent: a random instance is picked"
            )
    if sc.sticky is not None:
        value = request.cookie(sc.sticky.cookie)
        lines.append(
            f"sticky: cookie {sc.sticky.cookie} = {value!r}"
            if value is not None
            else f"sticky: no {sc.sticky.cookie} cookie yet: picked by {sc.algorithm}, then pinned"
        )
    return "\n".join(lines)


@app.command()
def demo(
    listen: Annotated[str, typer.Option(help="HOST:PORT for the gateway.")] = "127.0.0.1:8080",
    admin: Annotated[
        str, typer.Option(help="HOST:PORT of the admin API; 'none' turns it off.")
    ] = "127.0.0.1:9901",
) -> None:
    """Start three example services (two instances each) and the gateway in front of them."""
    from portway.demo.runner import run_demo

    _setup_logging()
    raise typer.Exit(run_demo(listen, None if admin.strip().lower() == "none" else admin))


def _admin_url(admin: str) -> str:
    return admin if "://" in admin else "http://" + admin


AdminUrlOption = Annotated[str, typer.Option(help="URL of the admin API (`admin.address`).")]
AdminTokenOption = Annotated[
    str | None,
    typer.Option(envvar="PORTWAY_ADMIN_TOKEN", help="The admin token, if one is set."),
]


@app.command()
def top(
    admin: AdminUrlOption = "http://127.0.0.1:9901",
    token: AdminTokenOption = None,
    interval: Annotated[
        float, typer.Option(min=0.1, help="Seconds between polls; rates cover this interval.")
    ] = 1.0,
    once: Annotated[
        bool, typer.Option("--once", help="Poll twice, print one frame and exit (for scripts).")
    ] = False,
) -> None:
    """Live requests/s, 5xx/s, p50 and p99 per route and service, and instance health, in the
    terminal (the admin dashboard's numbers). Ctrl-C exits."""
    from rich.console import Console

    from portway.admin.top import run_top

    raise typer.Exit(run_top(_admin_url(admin), token, interval, once=once, console=Console()))


@app.command()
def certs(
    admin: AdminUrlOption = "http://127.0.0.1:9901",
    token: AdminTokenOption = None,
    warn_days: Annotated[
        float | None,
        typer.Option(help="Exit 1 if a certificate expires within this many days (monitoring)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the admin API's JSON.")] = False,
) -> None:
    """Every certificate the running gateway serves: listener, hosts, issuer, expiry, and any
    reload refused; soonest expiry first."""
    from rich.console import Console

    from portway.admin.certs import certificates_table
    from portway.admin.top import AdminError, fetch_json

    try:
        document = fetch_json(_admin_url(admin), "/certificates", token)
    except AdminError as exc:
        typer.echo(f"portway certs: {exc}", err=True)
        raise typer.Exit(2) from None
    certificates = document.get("certificates", [])
    if as_json:
        typer.echo(json.dumps(document, indent=2))
    else:
        # Piped output is read by scripts and grep: do not wrap host names at 80 columns.
        Console(width=None if sys.stdout.isatty() else 200).print(certificates_table(certificates))
    if warn_days is not None and any(c["days_left"] < warn_days for c in certificates):
        raise typer.Exit(1)


@app.command("hash-password")
def hash_password_command(
    stdin: Annotated[
        bool,
        typer.Option("--stdin", help="Read the password from the first line of standard input."),
    ] = False,
    iterations: Annotated[
        int, typer.Option(min=1000, help="PBKDF2 rounds: each check costs the gateway this much.")
    ] = DEFAULT_ITERATIONS,
) -> None:
    """Print a `password_hash` line for a `basic_auth` user (pbkdf2_sha256, Django's format)."""
    # The default rounds cost about 50 ms per check on one core; the gateway remembers good
    # credentials, so that is paid once per client and credential, not per request.
    if stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        _fail("portway hash-password: the password is empty")
    typer.echo(hash_password(password, iterations))


def main() -> None:
    app()
