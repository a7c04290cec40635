"""What a route may change before forwarding (``rewrite``) or answer instead (``redirect``).

The models check what one field alone can tell (a regex compiles, its replacement names groups the
pattern has, a redirect target is a path or an http(s) URL); what depends on the route around them
(a prefix rewrite on a prefix route, ``$rest`` only where a prefix matched, no policies on a
redirect route) is in ``config.rewrite_checks``. The semantics themselves are documented in the
README ("Rewrites and redirects") and implemented by ``routing.rewrite``.
"""

from __future__ import annotations

import re
from typing import Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

# Printable ASCII but for "#" and "?": what a URI path may hold (routing.normalize refuses the rest).
_NOT_IN_PATH = re.compile(r"[^\x21-\x7e]|[#?]")
# A redirect target: printable ASCII without spaces (a Location is a URI reference, RFC 9110 §10.2.2).
_NOT_IN_LOCATION = re.compile(r"[^\x21-\x7e]")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_GLOBAL_FLAGS = re.compile(r"^\(\?[aiLmsux]+\)")
_VARIABLE = re.compile(r"\$(\$|[a-z]+)")
REDIRECT_VARIABLES = ("host", "path", "rest")
RedirectStatus = Literal[301, 302, 303, 307, 308]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


def replacement_literal(pattern: str, replacement: str) -> str:
    """``replacement`` with every group reference replaced by nothing; ``ValueError`` when the
    pattern does not compile or the replacement names a group it does not have.

    Python's own template parser does the checking: the pattern is wrapped so that it always
    matches (an empty alternative), keeping its groups, and the replacement is expanded once.
    """
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
    flags = _GLOBAL_FLAGS.match(pattern)  # inline global flags must stay first
    head = flags.group() if flags else ""
    wrapped = re.compile(f"{head}(?:{pattern[len(head) :]})|")
    try:
        return wrapped.sub(replacement, "", count=1)
    except (re.error, IndexError) as exc:
        raise ValueError(f"invalid replacement {replacement!r}: {exc}") from None


def redirect_parts(to: str) -> list[str]:
    """``to`` split into literal text and variables: a variable is ``$name``, a literal ``$`` is
    ``$$``. ``ValueError`` names an unknown variable."""
    parts: list[str] = []
    position = 0
    for match in _VARIABLE.finditer(to):
        parts.append(to[position : match.start()])
        name = match.group(1)
        if name == "$":
            parts[-1] += "$"
        elif name in REDIRECT_VARIABLES:
            parts.append("$" + name)
        else:
            known = ", ".join("$" + v for v in REDIRECT_VARIABLES)
            raise ValueError(f"unknown variable ${name} in {to!r} (known: {known}; $$ is a '$')")
        position = match.end()
    parts.append(to[position:])
    # Adjacent literals (around a "$$") merge, so that variables alternate with literals.
    merged: list[str] = []
    for part in parts:
        if merged and not part.startswith("$") and not merged[-1].startswith("$"):
            merged[-1] += part
        elif part:
            merged.append(part)
    return merged


class RewriteConfig(_Model):
    """Change the request before it goes upstream: its path (one of prefix or regex), its Host."""

    prefix: str | None = Field(
        None,
        description="Prefix routes: replaces the matched prefix (`/api` + `prefix: /` sends "
        "`/api/users` as `/users`).",
    )
    regex: str | None = Field(
        None, description="Replace the first match of this expression in the normalized path..."
    )
    replacement: str | None = Field(
        None, description="...with this (`\\1`, `\\g<name>` insert groups)."
    )
    host: str | None = Field(None, description="The Host sent upstream instead of the client's.")

    @field_validator("prefix")
    @classmethod
    def _prefix_is_a_path(cls, value: str | None) -> str | None:
        if value is not None:
            if not value.startswith("/"):
                raise ValueError(f"a prefix replacement must start with '/': {value!r}")
            bad = _NOT_IN_PATH.search(value)
            if bad is not None:
                raise ValueError(f"character {bad.group()!r} is not allowed in a URI path")
            if _BAD_PERCENT.search(value):
                raise ValueError(f"invalid percent-encoding in {value!r}")
        return value

    @field_validator("host")
    @classmethod
    def _host_is_an_authority(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(
            r"[A-Za-z0-9.\-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?", value
        ):
            raise ValueError(f"expected a host name or host:port, got {value!r}")
        return value.lower() if value is not None else None

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            replacement_literal(value, "")
        return value

    @field_validator("replacement")
    @classmethod
    def _replacement_fits(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Field validators run in field order: a valid regex is in info.data by now.
        pattern = info.data.get("regex")
        if value is not None and pattern is not None:
            literal = replacement_literal(pattern, value)
            bad = _NOT_IN_PATH.search(literal)
            if bad is not None:
                raise ValueError(f"character {bad.group()!r} is not allowed in a URI path")
        return value

    @model_validator(mode="after")
    def _one_path_rewrite(self) -> Self:
        if self.prefix is not None and self.regex is not None:
            raise ValueError("set prefix or regex (with replacement), not both")
        if (self.regex is None) != (self.replacement is None):
            raise ValueError("regex and replacement go together")
        if self.prefix is None and self.regex is None and self.host is None:
            raise ValueError("set prefix, regex (with replacement) or host")
        return self


class RedirectConfig(_Model):
    """Answer with a redirect instead of forwarding; the route then has no service."""

    to: str = Field(
        description="Where to: a path or an http(s) URL; `$host`, `$path`, `$rest` (after the "
        "matched prefix) are replaced."
    )
    status: RedirectStatus = Field(302, description="301, 302, 303, 307 or 308.")
    keep_query: bool = Field(False, description="Append the request's query string.")

    @field_validator("to")
    @classmethod
    def _to_is_a_location(cls, value: str) -> str:
        bad = _NOT_IN_LOCATION.search(value)
        if bad is not None:
            raise ValueError(f"character {bad.group()!r} is not allowed in a redirect target")
        redirect_parts(value)
        if not value.startswith(("/", "$path", "$rest", "http://", "https://")):
            raise ValueError(f"expected a path (/...) or an http:// or https:// URL, got {value!r}")
        return value
