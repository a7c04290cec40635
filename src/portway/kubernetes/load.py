"""Reading a manifest directory: every ``*.yaml``, ``*.yml`` and ``*.json`` under it.

Files are read in sorted path order (so "first" is well defined when two files define one
object). Names starting with ``.`` are skipped, files and folders alike: editors' temporary files,
and the ``..data`` links of a ConfigMap volume, which would otherwise be read twice. A YAML file
may hold several documents; a document (YAML or JSON) of kind ``List`` (``IngressList``, ...)
contributes its ``items``. A file that cannot be parsed is one issue naming its line, and none of
its objects are read; the other files are unaffected.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from portway.kubernetes.issues import ManifestIssue, Source

SUFFIXES = (".yaml", ".yml", ".json")
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class Document:
    raw: object
    source: Source


@dataclass(frozen=True, slots=True)
class ManifestFile:
    """One file as read: its documents, or the issue that kept it from being parsed."""

    path: str
    digest: str  # of the bytes read: an unchanged file is not parsed again
    documents: tuple[Document, ...]
    problem: ManifestIssue | None = None


def manifest_files(directory: Path) -> list[Path]:
    found = []
    for path in directory.rglob("*"):
        relative = path.relative_to(directory)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix.lower() in SUFFIXES and path.is_file():
            found.append(path)
    return sorted(found)


def directory_digest(directory: Path) -> str:
    """A digest of every manifest file's name and bytes: equal digests, equal manifests."""
    digest = hashlib.blake2b(digest_size=16)
    for path in manifest_files(directory):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        digest.update(str(path).encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def read_directory(directory: Path) -> list[ManifestFile]:
    return [read_file(path) for path in manifest_files(directory)]


def read_file(path: Path) -> ManifestFile:
    name = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return _failed(name, "", f"cannot read the file: {exc.strerror or exc}", None)
    digest = hashlib.sha256(data).hexdigest()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return _failed(name, digest, "not valid UTF-8", line)
    if path.suffix.lower() == ".json":
        try:
            documents = [(json.loads(text), 1)] if text.strip() else []
        except json.JSONDecodeError as exc:
            return _failed(name, digest, f"invalid JSON: {exc.msg}", exc.lineno)
    else:
        try:
            documents = _yaml_documents(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
            at: int | None = mark.line + 1 if mark is not None else None
            problem = getattr(exc, "problem", None) or str(exc)
            return _failed(name, digest, f"invalid YAML: {problem}", at)
    return ManifestFile(name, digest, tuple(_expand(name, documents)))


def _yaml_documents(text: str) -> list[tuple[object, int]]:
    loader = _LOADER(text)
    documents: list[tuple[object, int]] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            documents.append((loader.construct_document(node), node.start_mark.line + 1))
    finally:
        loader.dispose()
    return documents


def _expand(name: str, documents: list[tuple[object, int]]) -> list[Document]:
    """Documents in file order; a ``List`` document's items take its place, one index each."""
    result: list[Document] = []
    index = 0
    for raw, start in documents:
        kind = raw.get("kind") if isinstance(raw, dict) else None
        items = raw.get("items") if isinstance(raw, dict) else None
        if isinstance(kind, str) and kind.endswith("List") and isinstance(items, list):
            for item in items:
                result.append(Document(item, Source(name, index, start)))
                index += 1
            continue
        if raw is not None:
            result.append(Document(raw, Source(name, index, start)))
        index += 1
    return result


def _failed(name: str, digest: str, message: str, line: int | None) -> ManifestFile:
    issue = ManifestIssue(name, None, "", "", "", message, "error", line)
    return ManifestFile(name, digest, (), issue)
