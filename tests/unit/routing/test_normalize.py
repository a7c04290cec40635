"""Path normalization: RFC 3986 §6.2.2 (case and percent-encoding) and §5.2.4 (dot segments)."""

from __future__ import annotations

import itertools

import pytest

from portway.routing import normalize_path


def rfc3986_remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 transcribed literally (input/output buffers): the oracle for the tests."""
    inp, out = path, ""
    while inp:
        if inp.startswith("../"):
            inp = inp[3:]
        elif inp.startswith("./"):
            inp = inp[2:]
        elif inp.startswith("/./"):
            inp = "/" + inp[3:]
        elif inp == "/.":
            inp = "/"
        elif inp.startswith("/../") or inp == "/..":
            inp = "/" + inp[4:] if inp.startswith("/../") else "/"
            out = out[: out.rfind("/")] if "/" in out else ""
        elif inp in (".", ".."):
            inp = ""
        else:
            start = 1 if inp.startswith("/") else 0
            end = inp.find("/", start)
            end = len(inp) if end == -1 else end
            out, inp = out + inp[:end], inp[end:]
    return out


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # The brief's and RFC 3986 §5.2.4's examples.
        ("/a/b/../c", "/a/c"),
        ("/../a", "/a"),
        ("/a/.", "/a/"),
        ("/.", "/"),
        ("/..", "/"),
        ("/a/b/c/./../../g", "/a/g"),  # RFC 3986 §5.2.4 worked example
        ("/mid/content=5/../6", "/mid/6"),  # RFC 3986 §5.2.4 worked example
        ("/a/b/..", "/a/"),
        ("/a/./b/", "/a/b/"),
        ("/a/..b/.c/...", "/a/..b/.c/..."),  # only whole "." / ".." segments are dot-segments
        ("/a//../b", "/a/b"),  # ".." removes the empty segment between the slashes
        ("/../../..", "/"),
    ],
)
def test_dot_segments_removed_as_rfc3986_section_5_2_4(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected
    assert rfc3986_remove_dot_segments(raw) == expected


def test_dot_segment_removal_agrees_with_rfc_algorithm_on_every_small_path() -> None:
    """Every path of up to 4 segments drawn from a tricky alphabet, against the literal RFC text."""
    alphabet = ["", ".", "..", "a", "..."]
    checked = 0
    for depth in range(1, 5):
        for segments in itertools.product(alphabet, repeat=depth):
            path = "/" + "/".join(segments)
            assert normalize_path(path) == rfc3986_remove_dot_segments(path), path
            checked += 1
    assert checked == 5 + 25 + 125 + 625


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/%7euser", "/~user"),  # RFC 3986 §6.2.2.2: unreserved octets are decoded
        ("/%41%62%2D%5F%2e", "/Ab-_."),
        ("/a%2fb", "/a%2Fb"),  # §6.2.2.1: hex upper-cased; "/" is reserved so stays encoded
        ("/a%2Fb/../c", "/c"),  # %2F is not a separator: "a%2Fb" is a single segment
        ("/%e2%82%ac", "/%E2%82%AC"),  # non-ASCII octets stay encoded
        ("/%25", "/%25"),  # "%" itself stays encoded...
        ("/%252E", "/%252E"),  # ...so nothing is decoded twice
        ("/%20x", "/%20x"),
    ],
)
def test_percent_encoding_normalized_as_rfc3986_section_6_2_2(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/a/%2E%2E/b", "/b"),  # %2E decodes to "." before dot-segment removal
        ("/a/%2e/b", "/a/b"),
        ("/%2e%2e/%2e%2e/etc/passwd", "/etc/passwd"),  # traversal cannot escape the root
        ("/a/.%2e", "/"),
    ],
)
def test_encoded_dots_take_part_in_dot_segment_removal(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected


@pytest.mark.parametrize("raw", ["/", "/plain/path", "/a/b.c/d", "/a-b_c~d/e", "/a//b", "/x."])
def test_fast_path_returns_the_very_same_object(raw: str) -> None:
    assert normalize_path(raw) is raw


def test_duplicate_slashes_are_kept_by_default() -> None:
    """RFC 3986 gives empty segments meaning; merging them is opt-in."""
    assert normalize_path("//a//b/") == "//a//b/"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("//a//b/", "/a/b/"),
        ("//", "/"),
        ("/a///", "/a/"),
        ("/a//../b", "/b"),  # merged first: "/a/../b"
        ("/a/%2F%2F/b", "/a/%2F%2F/b"),  # encoded slashes are not separators
    ],
)
def test_merge_slashes(raw: str, expected: str) -> None:
    assert normalize_path(raw, merge_slashes=True) == expected


@pytest.mark.parametrize("raw", ["/%zz", "/a%4", "/a%", "/%g0/b", "/%%41"])
def test_invalid_percent_encoding_is_rejected(raw: str) -> None:
    with pytest.raises(ValueError, match="percent-encoding"):
        normalize_path(raw)


@pytest.mark.parametrize(
    "raw", ["/a b", "/a\tb", "/a\x00", "/a\x7f", "/caf\u00e9", "/a#frag", "/a?q=1", "/a\r\n"]
)
def test_characters_outside_a_uri_path_are_rejected(raw: str) -> None:
    """RFC 3986 §3.3: a path holds pchars and "/"; controls, space, "#", "?", non-ASCII never."""
    with pytest.raises(ValueError, match="not allowed"):
        normalize_path(raw)


def test_bad_characters_are_rejected_even_on_the_fast_path() -> None:
    with pytest.raises(ValueError):
        normalize_path("/plain path")


@pytest.mark.parametrize("raw", ["", "a/b", "*", "http://example.com/"])
def test_a_path_must_start_with_a_slash(raw: str) -> None:
    with pytest.raises(ValueError, match="start with '/'"):
        normalize_path(raw)


def test_sub_delims_colon_and_at_are_legal_path_characters() -> None:
    """RFC 3986 §3.3: pchar includes sub-delims, ":" and "@"."""
    raw = "/a:b@c!$&'()*+,;=d"
    assert normalize_path(raw) == raw
