"""YAML reading through libyaml when PyYAML was built with it.

The table contracts (``schemas/*.yaml``) and the config schema are read by nearly every job and
every planning; PyYAML's pure-Python parser takes about 0.15 s for them, its libyaml binding
(``CSafeLoader``, the same safe subset) a tenth of that.
"""

from __future__ import annotations

from typing import Any

import yaml

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_load(text: str) -> Any:
    """``yaml.safe_load(text)``, by libyaml when available."""
    return yaml.load(text, Loader=_LOADER)
