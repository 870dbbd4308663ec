"""Where the project's declarative files live.

The schemas are data, not code: they sit at the top of the repository (``schemas/``) so that
the workflow, the docs and the package read the same files. ``KETAMAP_SCHEMAS`` overrides the
location for installs outside a checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def schema_dir() -> Path:
    """Return the folder holding the column, table, config and scenario schemas."""
    return Path(os.environ.get("KETAMAP_SCHEMAS", REPO_ROOT / "schemas"))
