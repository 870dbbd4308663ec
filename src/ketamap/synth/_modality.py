"""The plug-in contract every modality generator follows.

The clinical part, PET, iEEG and behaviour are separate modules. The consortium generator only
knows this protocol: it asks each module whether it applies to a site, lets it check the scenario,
write the site's files, add its reader options to the site config and list its planted truths.
Adding a modality means writing one module and appending it to
:data:`ketamap.synth.consortium.MODULES`; nothing else changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class Modality(Protocol):
    """What a modality generator module provides (module-level functions satisfy it)."""

    NAME: str

    def validate(self, scenario: dict[str, Any], source: str | None) -> None:
        """Raise ConfigError for scenario content this modality cannot generate."""

    def applies(self, site: dict[str, Any]) -> bool:
        """Return whether this modality writes files for ``site``."""

    def write_site(self, scenario: dict[str, Any], site: dict[str, Any], site_dir: Path) -> None:
        """Write this modality's files of ``site`` into ``site_dir``."""

    def reader_options(self, site: dict[str, Any]) -> dict[str, Any]:
        """Return the ``reader`` options the workflow config needs to read what was written."""

    def truth(self, scenario: dict[str, Any]) -> list[dict[str, Any]]:
        """Return the ground-truth entries this modality planted."""
