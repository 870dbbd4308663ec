"""The run manifest (results/manifest.json): what produced the results.

Each site's revision, commit and content hashes, the code version and commit, a hash of the config
(without the key or how this machine reaches the remotes) and of the table contracts, and the hash,
table, schema version and row count of every output. No timestamps: an unchanged rerun gives an
identical manifest.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from ketamap import __version__, integrity, registry, schemas


def write_run_manifest(
    config: dict[str, Any],
    fetch_manifests: list[str],
    outputs: list[str],
    path: str | Path,
    workdir: str | Path = ".",
) -> None:
    """Record what produced the results: each site's revision and hashes, code version, config, outputs.

    No timestamps: an unchanged rerun gives an identical manifest.
    """
    sites = []
    for p in sorted(fetch_manifests):
        m = json.loads(Path(p).read_text())
        if "listing" in m:
            # fetch.per_session: the fetch pulled the site's own files and the session jobs the
            # rest; the run read the whole dataset, as a whole-site fetch would record it.
            m = m | {
                "n_files": len(m["listing"]),
                "bytes": sum(int(f["bytes"]) for f in m["listing"]),
            }
        sites.append(
            {
                k: m[k]
                for k in (
                    "site",
                    "registry",
                    "path",
                    "revision",
                    "commit",
                    "dvc_md5",
                    "n_files",
                    "bytes",
                )
            }
        )
    files = []
    for p in sorted(outputs):
        entry: dict[str, Any] = {"path": p, "sha256": integrity.file_hash(p)}
        if p.endswith(".parquet"):
            # A table altered after it was written is never recorded as official.
            integrity.verify_recorded(p, "the table")
            meta = pq.read_schema(p).metadata or {}
            entry["table"] = meta.get(schemas.METADATA_TABLE, b"").decode()
            entry["schema_version"] = int(meta.get(schemas.METADATA_VERSION, b"0"))
            entry["rows"] = pq.read_metadata(p).num_rows
        files.append(entry)
    # Neither the key, how this machine reaches the remotes (keyfile, timeout) nor how the work is
    # cut into jobs (byte-identical tables whatever it is) says anything about the results: two labs
    # with the same config otherwise get the same manifest.
    config_public = {
        k: v for k, v in config.items() if k not in ("pseudonymization", "fetch", "jobs")
    }
    manifest = {
        "ketamap_version": __version__,
        "code_commit": _git_commit(Path(workdir)),
        "config_sha256": hashlib.sha256(
            json.dumps(config_public, sort_keys=True, default=str).encode()
        ).hexdigest(),
        "schemas_sha256": hashlib.sha256(schemas.describe_json().encode()).hexdigest(),
        "sites": sites,
        "outputs": files,
    }
    registry.write_manifest(manifest, Path(path))


def _git_commit(workdir: Path) -> str:
    proc = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=workdir, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        return "unknown (not a git checkout)"
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
