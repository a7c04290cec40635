"""Request path normalization (RFC 3986 §6.2.2), so that routing and the backend see one spelling.

Steps, in this order:

1. Reject characters a URI path never holds (RFC 3986 §3.3): controls, space, DEL, non-ASCII, and
   the delimiters ``#`` and ``?``. ``"<>\\^`{|}`` are tolerated, as llhttp and browsers pass them.
2. Percent-encoding normalization (§6.2.2.1, §6.2.2.2): an encoded *unreserved* octet (ALPHA
   DIGIT ``-._~``) is decoded; every other encoding is kept with upper-case hex, so ``%2F`` stays
   a literal octet, never a separator. ``%zz`` or a truncated ``%4`` raise ``ValueError`` (400).
3. With ``merge_slashes``, runs of ``/`` collapse to one. This happens before dot-segment removal,
   so ``/a//../b`` is ``/a/../b`` is ``/b``: what a user who asked for merging expects.
4. Dot-segment removal exactly as RFC 3986 §5.2.4. Decoding comes first: ``/%2E%2E/`` is ``/../``.

The common case (no ``%``, no ``/.``, no ``//`` when merging) returns the input object unchanged.
"""

from __future__ import annotations

import re

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX_DIGITS = "0123456789abcdefABCDEF"

# Printable ASCII except "#" and "?", which delimit the fragment and query (RFC 3986 §3).
_FORBIDDEN = re.compile(r"[^\x21-\x7e]|[#?]")


def _percent_table() -> dict[str, str]:
    """Two hex digits after ``%`` -> their normalized spelling; other pairs are invalid."""
    table: dict[str, str] = {}
    for high in _HEX_DIGITS:
        for low in _HEX_DIGITS:
            char = chr(int(high + low, 16))
            table[high + low] = char if char in _UNRESERVED else f"%{high.upper()}{low.upper()}"
    return table


_PERCENT = _percent_table()


def normalize_path(raw: str, merge_slashes: bool = False) -> str:
    """The normalized form of ``raw``, a path without query; ``ValueError`` if it is invalid."""
    # str methods scan in C several times faster than one regex search; the regex only names the
    # culprit once we know there is one.
    if not (raw.isascii() and raw.isprintable()) or " " in raw or "#" in raw or "?" in raw:
        bad = _FORBIDDEN.search(raw)
        raise ValueError(f"character {bad.group() if bad else raw!r} is not allowed in a URI path")
    if not raw.startswith("/"):
        raise ValueError(f"a path must start with '/': {raw!r}")
    path = _normalize_percent_encoding(raw) if "%" in raw else raw
    if "/." in path or (merge_slashes and "//" in path):
        return _remove_dot_segments(path, merge_slashes)
    return path


def _normalize_percent_encoding(raw: str) -> str:
    pieces = raw.split("%")
    out = [pieces[0]]
    for piece in pieces[1:]:
        encoded = _PERCENT.get(piece[:2])
        if encoded is None:
            raise ValueError(f"invalid percent-encoding '%{piece[:2]}' in path")
        out.append(encoded)
        out.append(piece[2:])
    return "".join(out)


def _remove_dot_segments(path: str, merge_slashes: bool) -> str:
    """RFC 3986 §5.2.4 for an absolute path, one segment at a time.

    Equivalent to the RFC's buffer algorithm: "." is dropped, ".." drops the previous output segment
    (empty ones included), and either one in last position leaves a trailing "/" behind.
    """
    segments = path.split("/")
    last = len(segments) - 1
    out: list[str] = []
    for position in range(1, last + 1):
        segment = segments[position]
        if segment == "." or segment == "..":
            if segment == ".." and out:
                out.pop()
            if position == last:
                out.append("")
        elif segment or not merge_slashes or position == last:
            out.append(segment)
    return "/" + "/".join(out)
