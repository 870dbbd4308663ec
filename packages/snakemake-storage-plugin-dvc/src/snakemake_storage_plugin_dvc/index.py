"""An index of a registry at one revision: what its DVC outputs hold, written once and read when
planning, so that planning opens no registry.

Opening a registry costs a ``git clone`` (or a local git checkout), the ``.dvc`` files and one
``.dir`` listing per dataset; a workflow with one query per session asks every query's
existence, size, checksum and modification time each time it plans. An index answers those
from one small JSON file. It is trusted for planning only: retrieving a file opens the registry
anyway (its DVC remote is configured there), and the index's outputs must then be the ones git
pins at the revision, md5 for md5, or the retrieval stops with an error naming the index.

The format (``FORMAT``), JSON with sorted keys::

    {"format": "snakemake-storage-plugin-dvc/index/1",
     "registry": "<as in the provider's setting>", "revision": "v2", "commit": "<sha>",
     "outs": [{"path": "datasets/site_a", "md5": "<md5>.dir",
               "files": {"<relpath>": {"md5": "<md5>", "size": 123}, ...}},
              {"path": "datasets/table.tsv", "md5": "<md5>", "size": 456}]}

An output listed is listed whole: a folder's ``files`` must hash to its ``.dir`` md5 (DVC's own
listing hash), which :func:`load` checks, so an index cannot claim other files than the
release pins. Outputs not listed are looked up in the registry itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snakemake_storage_plugin_dvc.release import DVCRegistryError, Out

FORMAT = "snakemake-storage-plugin-dvc/index/1"


def listing_md5(files: Mapping[str, str]) -> str:
    """DVC's md5 of a folder (its ``.dir`` object without the suffix): the JSON of its sorted
    ``{"md5", "relpath"}`` entries. ``files`` maps a path relative to the folder to its md5."""
    listing = [{"md5": md5, "relpath": rel} for rel, md5 in sorted(files.items())]
    return hashlib.md5(
        json.dumps(listing, sort_keys=True).encode(), usedforsecurity=False
    ).hexdigest()


@dataclass
class Index:
    """A loaded index: the outputs (folder listings filled in) and the size of every object."""

    path: Path
    registry: str
    revision: str
    commit: str
    outs: list[Out]
    sizes: dict[str, int]  # object md5 -> size in bytes


def _check_out(out: Mapping[str, Any], where: str) -> None:
    md5 = str(out["md5"])
    if md5.endswith(".dir"):
        files = {rel: str(f["md5"]) for rel, f in out["files"].items()}
        got = listing_md5(files)
        if got != md5.removesuffix(".dir"):
            raise DVCRegistryError(
                f"{where}: the files listed for {out['path']!r} hash to {got}, not to the "
                f"output's md5 {md5} (the index was altered or written from another listing; "
                "write it again)"
            )


def write(
    dest: str | os.PathLike[str],
    *,
    registry: str,
    revision: str,
    commit: str,
    outs: Iterable[Mapping[str, Any]],
) -> Path:
    """Write an index (see the module's docstring for the shape of ``outs``) atomically.

    Every folder output's files must hash to its md5: an index is refused, not written, when they
    do not. The same arguments always give the same bytes."""
    dest = Path(dest)
    entries = []
    for out in sorted(outs, key=lambda o: str(o["path"])):
        entry: dict[str, Any] = {"path": str(out["path"]), "md5": str(out["md5"])}
        if entry["md5"].endswith(".dir"):
            entry["files"] = {
                str(rel): {"md5": str(f["md5"]), "size": int(f["size"])}
                for rel, f in sorted(out["files"].items())
            }
        elif out.get("size") is not None:
            entry["size"] = int(out["size"])
        _check_out(entry, f"index {dest}")
        entries.append(entry)
    data = {
        "format": FORMAT,
        "registry": str(registry),
        "revision": str(revision),
        "commit": str(commit),
        "outs": entries,
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, sort_keys=True, separators=(",", ":"))
            fh.write("\n")
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest


def load(path: str | os.PathLike[str]) -> Index:
    """Read and check an index; every problem is one error naming the file and what is wrong."""
    path = Path(path)
    where = f"index {path}"
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise DVCRegistryError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise DVCRegistryError(f"{where}: not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise DVCRegistryError(f"{where}: format {found!r}, expected {FORMAT!r}")
    try:
        outs, sizes = [], {}
        for out in data["outs"]:
            _check_out(out, where)
            if str(out["md5"]).endswith(".dir"):
                files = {f"{out['path']}/{rel}": str(f["md5"]) for rel, f in out["files"].items()}
                sizes.update({str(f["md5"]): int(f["size"]) for f in out["files"].values()})
                outs.append(Out(str(out["path"]), "", str(out["md5"]), None, _files=files))
            else:
                outs.append(Out(str(out["path"]), "", str(out["md5"]), out.get("size")))
        return Index(
            path, str(data["registry"]), str(data["revision"]), str(data["commit"]), outs, sizes
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DVCRegistryError(
            f"{where}: malformed ({type(exc).__name__}: {exc}; expected the shape of {FORMAT})"
        ) from None
