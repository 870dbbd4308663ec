"""``python -m snakemake_storage_plugin_dvc index REGISTRY REVISION DEST [PATH ...]``: write the
index of a registry at a revision (every DVC output, or those at or under the PATHs), for the
provider's ``index`` setting. Sizes come from the registry's DVC remote (one stat per object)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from snakemake_interface_common.exceptions import WorkflowError

from snakemake_storage_plugin_dvc import default_cache_dir, parse_remote_options
from snakemake_storage_plugin_dvc.index import write
from snakemake_storage_plugin_dvc.release import DVCRegistryError, Release


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m snakemake_storage_plugin_dvc")
    commands = parser.add_subparsers(dest="command", required=True)
    index = commands.add_parser("index", help="write the index of a registry at a revision")
    index.add_argument("registry", help="as the provider's `registry` setting gives it")
    index.add_argument("revision")
    index.add_argument("dest", type=Path, help="the JSON file to write")
    index.add_argument("paths", nargs="*", help="outputs at or under these paths (default all)")
    index.add_argument("--cache", type=Path, default=None, help="the provider's cache folder")
    index.add_argument("--timeout", type=float, default=None)
    index.add_argument(
        "--remote-options", default=None, help="key=value,key=value (the provider's setting)"
    )
    args = parser.parse_args(argv)
    try:
        release = Release(
            args.registry,
            args.revision,
            args.cache or default_cache_dir(),
            timeout=args.timeout,
            remote_options=parse_remote_options(args.remote_options),
        ).open()
        outs = release.index_outs(args.paths or None)
        if not outs:
            raise DVCRegistryError(
                f"{release.where()}: no DVC-tracked output at or under {args.paths}"
            )
        write(
            args.dest,
            registry=args.registry,
            revision=args.revision,
            commit=release.commit,
            outs=outs,
        )
    except WorkflowError as exc:  # DVCRegistryError included
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.dest}: {len(outs)} outputs of {release.where()} (commit {release.commit})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
