"""Project exceptions.

Every error a user can cause (bad config, bad scenario, bad site data, a missing revision) is a
:class:`KetamapError` whose message says where (site, file, field), what was received, what was
expected and, when there is one, how to fix it. The CLI and the workflow adapters print that one
message and exit non-zero; they never show a traceback for these.
"""

from __future__ import annotations

from pathlib import Path


class KetamapError(Exception):
    """Base class of all errors ketamap reports to its users."""

    def __init__(
        self,
        problem: str,
        *,
        site: str | None = None,
        file: str | Path | None = None,
        field: str | None = None,
        expected: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.problem = problem
        self.site = site
        self.file = str(file) if file is not None else None
        self.field = field
        self.expected = expected
        self.hint = hint
        super().__init__(self.format())

    def format(self) -> str:
        where = []
        if self.site:
            where.append(f"site '{self.site}'")
        if self.file:
            where.append(f"file '{self.file}'")
        if self.field:
            where.append(f"field '{self.field}'")
        text = (", ".join(where) + ": " if where else "") + self.problem
        if self.expected:
            text += f"; expected {self.expected}"
        if self.hint:
            text += f". Fix: {self.hint}"
        return text


class ConfigError(KetamapError):
    """The workflow config or a scenario file does not match its schema."""


class SiteDataError(KetamapError):
    """A site's dataset is missing something or holds a value that cannot be read safely."""


class RegistryError(KetamapError):
    """The data registry or its DVC remote cannot provide what the config asks for."""


class SchemaError(KetamapError):
    """A table does not match its declared schema (a bug or a broken input, never coerced)."""
