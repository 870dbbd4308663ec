"""Where the project's declarative files live.

The schemas are the consortium's contract and sit at the top of the repository (``schemas/``),
where the workflow and the docs read them. The package reads the same files as package data:
``ketamap/contracts`` is a link to ``schemas/`` in the checkout, and a built wheel or sdist
carries copies of them, so an installed ``ketamap`` finds its table contracts and reference
tables (columns, tables, PET units, scales, config and scenario schemas) without the checkout.
``KETAMAP_SCHEMAS`` points it at another folder (e.g. a consortium's amended contract).
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path


def schema_dir() -> Path:
    """Return the folder holding the column, table, config and scenario schemas."""
    override = os.environ.get("KETAMAP_SCHEMAS")
    if override:
        return Path(override)
    # A regular (file system) install: the package data are files on disk.
    return Path(str(files("ketamap") / "contracts"))
