"""The query syntax: ``dvc://<registry>@<revision>//<path inside the registry>``, or the path
alone when the provider's settings give the registry and the revision (``registry``,
``revision``; e.g. a tagged ``storage`` directive per registry).

The path is separated from the rest by the *last* ``//`` and the revision from the registry by
the *last* ``@`` before it, so the registry may be any git URL or local path, including ones
that contain ``://``, ``@`` and ``/`` (``git@host:org/reg.git``, ``https://host/reg.git``,
``ssh://git@host/reg``). The revision and the path therefore must not contain ``//``; the
revision must not contain ``@`` (git refuses ``@{`` in ref names anyway).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from urllib.parse import quote

PREFIX = "dvc://"
SEPARATOR = "//"

_WILDCARD = re.compile(r"\{[^{}]*\}")


class QueryError(ValueError):
    """A query that does not follow the syntax; the message says why."""


@dataclass(frozen=True)
class Query:
    registry: str
    rev: str
    path: str
    short: bool = False  # written as the path alone, registry and revision from the settings

    def __str__(self) -> str:
        return f"{PREFIX}{self.registry}@{self.rev}{SEPARATOR}{self.path}"

    @property
    def release(self) -> tuple[str, str]:
        return (self.registry, self.rev)

    def describe(self) -> str:
        """How errors name the query: registry URL, revision and path."""
        return f"registry {self.registry}, revision {self.rev!r}, path {self.path!r}"


def parse(query: str, registry: str | None = None, rev: str | None = None) -> Query:
    """Split ``query`` into registry, revision and path; :class:`QueryError` says what is wrong.

    A query without the ``dvc://`` scheme is a path alone: the registry and the revision are
    ``registry`` and ``rev`` (the provider's settings). Keeping the revision out of the query
    keeps it out of what Snakemake records as a job's inputs, so pinning another release whose
    files are identical changes no job's inputs (the modification times follow the content)."""
    if not query.startswith(PREFIX):
        if "://" in query:
            raise QueryError(f"a DVC query starts with {PREFIX!r}")
        if registry is None or rev is None:
            raise QueryError(
                f"{query!r} is a path alone, but the storage provider has no `registry` and "
                f"`revision` settings; give them, or write {PREFIX}<registry>@<revision>//<path>"
            )
        return _checked(registry, rev, query, short=True)
    body = query[len(PREFIX) :]
    head, sep, path = body.rpartition(SEPARATOR)
    if not sep:
        raise QueryError(
            f"no {SEPARATOR!r} before the path; expected {PREFIX}<registry>@<revision>//<path>"
        )
    registry, at, rev = head.rpartition("@")
    if not at:
        raise QueryError(
            f"no '@<revision>' before {SEPARATOR!r}; expected "
            f"{PREFIX}<registry>@<revision>//<path> (pin a tag or commit)"
        )
    return _checked(registry, rev, path)


def _checked(registry: str, rev: str, path: str, short: bool = False) -> Query:
    if not registry:
        raise QueryError("the registry (git URL or local path) is empty")
    if not rev:
        raise QueryError("the revision after '@' is empty (pin a tag or commit)")
    if any(c.isspace() for c in rev) or rev.startswith("-"):
        raise QueryError(f"the revision {rev!r} is not a git revision")
    if not path:
        raise QueryError("the path after '//' is empty (name a file or folder of a dataset)")
    if path.startswith("/"):
        raise QueryError(f"the path {path!r} must be relative to the registry's root")
    if path.endswith("/"):
        raise QueryError(f"the path {path!r} ends with '/'; name the folder without it")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise QueryError(f"the path {path!r} contains an empty, '.' or '..' segment")
    if parts[0] in (".git", ".dvc"):
        raise QueryError(f"the path {path!r} is inside the registry's {parts[0]} folder")
    return Query(registry, rev, path, short)


def has_wildcards(text: str) -> bool:
    return bool(_WILDCARD.search(text))


def registry_slug(registry: str) -> str:
    """A readable, unique folder name for a registry URL or path."""
    digest = hashlib.sha1(registry.encode(), usedforsecurity=False).hexdigest()[:8]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", registry.split("://", 1)[-1]).strip("_.")
    return f"{readable[-48:].lstrip('_.') or 'registry'}-{digest}"


def rev_slug(rev: str) -> str:
    """A folder name for a revision (branch names may contain '/')."""
    return quote(rev, safe="{},.-_+")
