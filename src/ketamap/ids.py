"""Pseudonymous subject identifiers.

A subject's id in every table is a keyed hash (HMAC-SHA256) of the site id and the site's own
identifier: stable across reruns and machines with the same key, unlinkable without it, and never
the site's own id. The key comes from the environment variable named in the config
(``pseudonymization.key_env``); the demo config carries a public demo key for synthetic data only.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable

from ketamap.errors import ConfigError

PREFIX = "KM"
DIGITS = 12


def pseudonymize(site: str, local_ids: Iterable[str], key: bytes) -> list[str]:
    """Return the pseudonym of each of a site's own subject ids."""
    out = []
    for local in local_ids:
        digest = hmac.new(key, f"{site}\x1f{local}".encode(), hashlib.sha256).hexdigest()
        out.append(PREFIX + digest[:DIGITS].upper())
    return out


def load_key(config: dict) -> bytes:
    """Find the pseudonymization key: the environment first, then the config's demo key.

    Raises a :class:`ConfigError` when neither is set, so real data is never hashed with a
    public key by accident.
    """
    spec = config.get("pseudonymization", {})
    env_name = spec.get("key_env", "KETAMAP_PSEUDONYM_KEY")
    value = os.environ.get(env_name)
    if value:
        return value.encode()
    demo = spec.get("demo_key")
    if demo:
        return str(demo).encode()
    raise ConfigError(
        f"no pseudonymization key: environment variable {env_name} is not set and no demo_key is configured",
        file="config/config.yaml",
        field="pseudonymization",
        hint=f"export {env_name}=<a secret shared by the consortium>",
    )


def key_fingerprint(config: dict) -> str:
    """A short one-way fingerprint of the key, so the workflow reruns when the key changes.

    It reveals nothing about the key (HMAC of a constant) and is safe to store in job metadata.
    """
    key = load_key(config)
    return hmac.new(key, b"ketamap key fingerprint", hashlib.sha256).hexdigest()[:16]
