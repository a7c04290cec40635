"""A parsed request head becomes an exchange: checked, routed, answered or sent on its way.

``new_exchange`` runs once per request, from ``ClientConnection.on_headers_complete``: it checks the
head (``request_head``), normalizes the path, routes it against the worker's current snapshot and
builds the ``Exchange`` (an ``UpgradeExchange`` for a WebSocket handshake). What a listener decides
before routing (``edge``), a missing route (404) and a redirect are answered here; a route's
policies then admit the request, refuse it, or keep it waiting for their verdict (``policy_wait``).
``forward`` is the request's way on once admitted: the upstream target (the bytes as received when
normalization changed nothing), a rewrite, the upstream head, and ``Exchange.route_to``.

Plain functions of the connection, compiled with it (setup.py ``COMPILED``): native calls, no
object made for them per request.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Final

from portway.errors import BadRequest, PayloadTooLarge
from portway.messages import LocalAnswer
from portway.policies.chain import PendingChain
from portway.proxy import responses
from portway.proxy.exchange import Exchange
from portway.proxy.service import Service
from portway.proxy.upgrade import UpgradeExchange
from portway.routing import CompiledRoute, TraceStep, normalize_path
from portway.routing.rewrite import Redirect, Rewrite
from portway.server.edge import before_routing
from portway.server.local_answers import answer
from portway.server.policy_wait import await_policies
from portway.server.request_head import (
    check_host,
    check_transfer_encoding,
    check_version,
    host_for_routing,
    parse_target,
    websocket_upgrade,
)
from portway.upstream.forward import (
    EXPLAIN_HEADER,
    RequestFields,
    new_request_id,
    original_client,
    valid_request_id,
)

if TYPE_CHECKING:
    from portway.server.http1 import ClientConnection

# Host fields seen valid, and their routing form (request_head validates and caches too; this one
# spares the two calls per request): bounded, filled as hosts come.
_ROUTING_HOSTS_LIMIT: Final = 4096
_routing_hosts: Final[dict[bytes, str]] = {}
_request_id_ok: Final = valid_request_id
REWRITE_FAILED: Final = b"rewrite_failed"
_NO_DROP: Final[frozenset[bytes]] = frozenset()


def new_exchange(conn: ClientConnection) -> Exchange:
    """The exchange of the request head ``conn`` has just parsed: checked, routed, and either
    answered, waiting for its policies' verdict, or given its upstream head."""
    ctx = conn.ctx
    parser = conn.parser
    method = parser.get_method()
    keep_alive = parser.should_keep_alive()
    headers = conn.headers
    fields = RequestFields(headers)
    if keep_alive and fields.connection is None:
        # Only HTTP/1.1 is persistent without a Connection field (RFC 9112 §9.3), and llhttp
        # parses no other version with a minor above 0 (0.9, 1.0, 1.1, 2.0): this is 1.1,
        # known without get_http_version(), which formats a string (~0.3 µs) at every call.
        version = "1.1"
    else:
        version = parser.get_http_version()
        if version != "1.1":
            check_version(version)
    upgrade = None
    # llhttp upgrades only a request with an Upgrade field or a CONNECT: asked only then (a
    # method call on the parser costs ~400 instructions)
    if (fields.upgrade or method == b"CONNECT") and parser.should_upgrade():
        upgrade = websocket_upgrade(method, version, headers, _announces_body(headers))  # 501/405
    url = conn.url
    if url[:1] == b"/":  # origin-form, nearly every request
        # Decoded first: compiled, str.find is native, where bytes.find is a method call (and
        # bytes.__contains__ first tries the operand as an int, raising and clearing a TypeError).
        target_text = url.decode("ascii")
        mark = target_text.find("?")
        if mark >= 0:
            path_text = target_text[:mark]
            query = target_text[mark + 1 :]
            question = True
        else:
            path_text = target_text
            query = ""
            question = False
        absolute_authority = None
    else:
        target = parse_target(url, method)
        path_text, query, absolute_authority = target.path, target.query, target.authority
        question = False
    host = fields.host
    routing_host = (
        _routing_hosts.get(host)
        if host is not None and absolute_authority is None and fields.host_count == 1
        else None
    )
    if routing_host is not None:
        authority: bytes = host  # type: ignore[assignment]  # not None when found
    else:
        authority = check_host(host, fields.host_count, version, absolute_authority)
        routing_host = host_for_routing(authority)
        if authority is host and len(_routing_hosts) < _ROUTING_HOSTS_LIMIT:
            _routing_hosts[authority] = routing_host
    transfer_encoding = fields.transfer_encoding
    if transfer_encoding is not None:
        check_transfer_encoding(transfer_encoding)
    content_length = fields.content_length
    max_body = conn.max_body
    if content_length is not None and max_body and int(content_length) > max_body:
        raise PayloadTooLarge(f"request body larger than {max_body} bytes")
    rid = fields.request_id
    if rid is None or _request_id_ok(rid) is None:
        rid = new_request_id()
    if path_text == "*":
        path = path_text
    else:
        try:
            path = normalize_path(path_text, conn.merge_slashes)
        except ValueError as exc:
            raise BadRequest(f"invalid path: {exc}") from None
    keep_alive = keep_alive and upgrade is None
    client_ip = conn.client_ip
    if fields.xff is not None and conn.info.trusted:
        client_ip = original_client(fields.xff, client_ip, ctx.trusted_proxies)
    context = conn.propagator.start(fields.traceparent, fields.tracestate)
    http10 = version == "1.0"
    exchange: Exchange
    # Each class named in its own call: compiled, that is a direct call of its constructor,
    # where a class chosen by an expression is called through type() (~0.5 µs a request).
    if upgrade is None:
        exchange = Exchange(conn, method, routing_host, path, query, headers, client_ip, rid,
                            context, keep_alive=keep_alive, http10=http10, max_body=max_body)  # fmt: skip
    else:
        upgrading = UpgradeExchange(conn, method, routing_host, path, query, headers,
                                    client_ip, rid, context, keep_alive=keep_alive,
                                    http10=http10, max_body=max_body)  # fmt: skip
        upgrading.init_upgrade()
        exchange = upgrading
    if fields.user_agent is not None:
        exchange.user_agent = fields.user_agent
    if fields.referer is not None:
        exchange.referer = fields.referer
    if transfer_encoding is not None or (content_length is not None and content_length != b"0"):
        has_body = True
        body_timeout = conn.body_timeout
        conn.deadline = conn.sweeper.now + body_timeout if body_timeout else 0.0
    else:
        has_body = False
        exchange.request_done = True  # known now; on_message_complete follows at once
        conn.deadline = 0.0
    extra = b""
    if conn.special:
        decision = before_routing(conn.listener, conn.tls, exchange)
        if isinstance(decision, LocalAnswer):
            answer(conn, exchange, decision, has_body, keep_alive, method)
            return exchange
        extra = decision
    trace: list[TraceStep] | None = [] if fields.explain and conn.may_explain else None
    snapshot = ctx.snapshot
    route = snapshot.routes.select(exchange, trace)
    if trace is not None:
        exchange.explain = _explain_header(route.name if route else None, trace)
    if route is None:
        close = has_body or not keep_alive or ctx.draining
        exchange.answer_locally(
            responses.local_response(
                404,
                "no route matches this host and path",
                rid,
                cause=responses.NO_ROUTE,
                close=close,
                head_only=method == b"HEAD",
                extra_headers=[(EXPLAIN_HEADER, exchange.explain)] if exchange.explain else None,
            ),
            close=close,
            status=404,
            cause=responses.NO_ROUTE,
        )
        return exchange
    action = route.action  # None for every route without a rewrite or redirect
    if action is not None and isinstance(action, Redirect):
        # Answered before the policies: a redirect forwards nothing they would guard.
        exchange.route_name = route.name  # counted and logged under its route
        answer(conn, exchange, action.answer(authority.decode("latin-1"), path, query),
               has_body, keep_alive, method)  # fmt: skip
        return exchange
    chain = snapshot.chains[route.index]
    drop = _NO_DROP
    if chain is not None:
        outcome = chain.apply(exchange, conn.stats)
        if type(outcome) is not bytes:  # answered, or a verdict pending
            exchange.route_name = route.name  # counted and logged under its route
            if isinstance(outcome, LocalAnswer):
                exchange.service = route.target
                answer(conn, exchange, outcome, has_body, keep_alive, method)
            else:
                assert isinstance(outcome, PendingChain)
                resume = functools.partial(forward, conn, exchange, route, action, fields,
                                           chain.drop, url, path_text, question,
                                           absolute_authority, authority, transfer_encoding,
                                           upgrade, has_body)  # fmt: skip
                await_policies(conn, exchange, outcome, route, has_body,
                               transfer_encoding is not None, extra, resume)  # fmt: skip
            return exchange
        extra += outcome
        drop = chain.drop
    forward(conn, exchange, route, action, fields, drop, url, path_text, question,
            absolute_authority, authority, transfer_encoding, upgrade, has_body, extra)  # fmt: skip
    return exchange


def forward(
    conn: ClientConnection,
    exchange: Exchange,
    route: CompiledRoute[Service],
    action: Rewrite | None,
    fields: RequestFields,
    drop: frozenset[bytes],
    url: bytes,
    path_text: str,
    question: bool,
    absolute_authority: bytes | None,
    authority: bytes,
    transfer_encoding: bytes | None,
    upgrade: bytes | None,
    has_body: bool,
    extra: bytes,
) -> None:
    """The request's way on once its policies admitted it: target, rewrite, upstream head."""
    if drop:
        fields.lines = [line for line in fields.lines if line.split(b":", 1)[0].lower() not in drop]
    path, query = exchange.path, exchange.query
    # ``question``: the target had a "?"; with nothing after it, it is not sent on
    if path is path_text and absolute_authority is None and (query or not question):
        upstream_target = url  # unchanged by normalization: the bytes as received
    elif query:
        upstream_target = (path + "?" + query).encode("ascii")
    else:
        upstream_target = path.encode("ascii")
    sent_authority = authority
    if action is not None:  # a rewrite: after the policies, which judged the client's request
        try:
            upstream_target = action.target(path, query)
        except ValueError as exc:
            exchange.route_name = route.name
            exchange.service = route.target
            failed = LocalAnswer(500, f"rewritten path is invalid: {exc}", REWRITE_FAILED)
            answer(conn, exchange, failed, has_body, exchange.keep_alive, exchange.verb)
            return
        if action.host is not None:
            sent_authority = action.host
    chunked = transfer_encoding is not None
    if upgrade is not None:  # the one hop-by-hop pair forwarded (RFC 9110 §7.8)
        extra += b"connection: upgrade\r\nupgrade: %s\r\n" % upgrade
    exchange.request_chunked = chunked
    exchange.route_to(
        route.target,  # type: ignore[arg-type]  # None only on redirect routes, answered above
        route.name,
        upstream_target,
        sent_authority,
        fields.upstream_lines(conn.info, authority, exchange.rid, chunked, extra),
    )


def _announces_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the head being completed announces a body (read only for upgrades)."""
    for name, value in headers:
        lower = name.lower()
        if lower == b"transfer-encoding" or (lower == b"content-length" and value != b"0"):
            return True
    return False


def _explain_header(route: str | None, trace: list[TraceStep]) -> bytes:
    """A one-line summary of the routing decision, safe to put in a header."""
    parts = [f"matched={route or '-'}"]
    for step in trace:
        if step.outcome != "matched":
            parts.append(f"lost {step.route}: {step.reason}")
    text = "; ".join(parts)
    cleaned = "".join(c if 32 <= ord(c) < 127 else "?" for c in text)
    return cleaned[:4000].encode("ascii")
