"""Deterministic random streams for the synthetic consortium.

Each stream is keyed by (scenario seed, site id, stream name). Site ids and stream names are turned
into integers with SHA-256 rather than Python's ``hash()``, which is salted per process, so the same
scenario writes the same bytes on every run and machine, and adding a site or a stream never shifts
the numbers another site or stream draws.
"""

from __future__ import annotations

import hashlib

import numpy as np


def stable_int(text: str) -> int:
    """Return a stable 64-bit integer for ``text``.

    Parameters
    ----------
    text
        Any string, e.g. a site id or a stream name.

    Returns
    -------
    int
        The first 8 bytes of the SHA-256 digest of the UTF-8 text, big-endian.
    """
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def stream(seed: int, site_id: str, name: str) -> np.random.Generator:
    """Return the random generator of one site's named stream.

    Parameters
    ----------
    seed
        The scenario's root seed.
    site_id
        The site the numbers belong to.
    name
        The purpose of the stream, e.g. ``"clinical.roster"``; one name per independent draw so
        that changing how many numbers one part draws leaves the others untouched.

    Returns
    -------
    numpy.random.Generator
        ``default_rng(SeedSequence([seed, stable_int(site_id), stable_int(name)]))``.
    """
    return np.random.default_rng(
        np.random.SeedSequence([int(seed), stable_int(site_id), stable_int(name)])
    )
