"""The ``ketamap`` command: synthetic consortia, registries and docs around the workflow.

The workflow itself runs with Snakemake (``make run``); these commands prepare what it reads.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from ketamap.config import section_schema
from ketamap.errors import KetamapError

# The registry's default remote timeout (the schema's fetch.timeout), without importing DVC for
# `ketamap --help`.
DEFAULT_TIMEOUT = float(section_schema("fetch")["properties"]["timeout"]["default"])


def _synth(args: argparse.Namespace) -> None:
    from ketamap import synth

    truth = synth.generate(Path(args.scenario), Path(args.out), overwrite=args.overwrite)
    print(f"wrote the synthetic consortium to {args.out} (ground truth: {truth})")


def _key_values(pairs: list[str], flag: str) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise KetamapError(
                f"{flag} {pair!r}: expected KEY=VALUE, e.g. keyfile=~/.ssh/id_ed25519"
            )
        options[key.strip()] = value
    return options


def _timeout(value: float) -> float | None:
    return value if value > 0 else None


def _registry(args: argparse.Namespace) -> None:
    from ketamap.registry import build_registry

    sites = build_registry(
        Path(args.sites),
        Path(args.out),
        args.remote,
        args.release,
        remote_options=_key_values(args.remote_option, "--remote-option"),
        timeout=_timeout(args.timeout),
        date=args.date,
    )
    print(f"released {', '.join(sites)} as {args.release} in {args.out} (DVC remote {args.remote})")


def _fetch(args: argparse.Namespace) -> None:
    from ketamap.registry import fetch_site, write_manifest

    site = {"id": args.site, "registry": args.registry, "revision": args.revision}
    if args.path:
        site["path"] = args.path
    result = fetch_site(
        site,
        Path(args.out),
        base=Path.cwd(),
        timeout=_timeout(args.timeout),
        remote_options=_key_values(args.remote_option, "--remote-option") or None,
    )
    if args.manifest:
        write_manifest(result, Path(args.manifest))
    print(
        f"fetched {args.site} at {args.revision} (commit {result['commit']}): "
        f"{result['n_files']} files, {result['bytes']} bytes verified, in {args.out}"
    )


def _site_config(args: argparse.Namespace) -> None:
    from ketamap import synth

    scenario = synth.load_scenario(Path(args.scenario))
    print(
        yaml.safe_dump(
            {"sites": synth.site_configs(scenario, args.registry, args.revision)}, sort_keys=False
        ),
        end="",
    )


def _datadict(args: argparse.Namespace) -> None:
    from ketamap.datadict import render

    text = render()
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")


def _recovery(args: argparse.Namespace) -> None:
    from ketamap.recovery import compare

    df = compare(args.truth, args.results)
    cols = [
        "analysis",
        "term",
        *[
            c
            for c in ("arm", "region", "region_group", "species", "measure")
            if c in df.columns and df[c].notna().any()
        ],
        "value",
        "estimate",
        "ci_low",
        "ci_high",
        "q_value",
        "covered",
        "sign_ok",
        "null_ok",
    ]
    print(df[cols].to_string(index=False))
    bad = df[~(df["found"] & df["covered"] & df["sign_ok"] & df["null_ok"])]
    if len(bad):
        print(f"{len(bad)} of {len(df)} truths not recovered", file=sys.stderr)
        raise SystemExit(1)
    print(f"all {len(df)} truths recovered")


def _calibration(args: argparse.Namespace) -> None:
    import pandas as pd

    from ketamap import calibration as cal

    wanted = tuple(a.strip() for a in args.analyses.split(",") if a.strip())
    analyses = tuple(
        a
        for a in (
            "clinical.madrs_change",
            "pet.baseline_trd_vs_hc",
            "pet.ketamine_x_time",
            "pet.change_vs_improvement",
            "pet.response_prediction",
        )
        if not wanted or any(a.startswith(w) for w in wanted)
    )
    layout = Path(args.scenario).stem
    results = [
        cal.run_case(case, jobs=args.jobs)
        for case in cal.scenario_cases(
            Path(args.scenario), layout, analyses, args.reps, regions=tuple(args.regions.split(","))
        )
    ]
    print(cal.format_table(cal.summarize(pd.concat(results, ignore_index=True))))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ketamap", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "synth", help="write a synthetic consortium (site datasets + ground_truth.json)"
    )
    p.add_argument("--scenario", required=True, help="scenario YAML (schemas/scenario.schema.yaml)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=_synth)

    p = sub.add_parser(
        "registry", help="release a folder of site datasets into a git + DVC data registry"
    )
    p.add_argument("--sites", required=True, help="folder with one dataset folder per site")
    p.add_argument("--out", required=True, help="registry git repository (created if absent)")
    p.add_argument("--remote", required=True, help="DVC remote URL or local folder")
    p.add_argument("--release", required=True, help="git tag of this release, e.g. v1")
    p.add_argument(
        "--remote-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a `dvc remote modify` option of the remote, e.g. keyfile=~/.ssh/id_ed25519 or "
        "endpointurl=https://s3.example.org (repeatable; credentials and keyfile stay in the "
        "registry's untracked .dvc/config.local, the rest is committed for partners)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="how long an SSH or S3 remote may stay silent before the push fails "
        f"(default {DEFAULT_TIMEOUT:g}; 0: no limit)",
    )
    p.add_argument(
        "--date",
        default=None,
        help="date of the release's commit and tag (ISO 8601 or @epoch; default SOURCE_DATE_EPOCH "
        "when set, else now): the same datasets and date give the same commit hashes",
    )
    p.set_defaults(func=_registry)

    p = sub.add_parser(
        "fetch",
        help="pull one dataset of a registry at a revision and verify every file "
        "(what the workflow's fetch step does)",
    )
    p.add_argument("--registry", required=True, help="registry git URL or path")
    p.add_argument("--site", required=True, help="site id (the dataset is datasets/<site>)")
    p.add_argument("--revision", required=True, help="tag, branch or commit")
    p.add_argument("--path", default=None, help="dataset path in the registry")
    p.add_argument("--out", required=True, help="folder to create with the dataset")
    p.add_argument("--manifest", default=None, help="write the fetch manifest (JSON) here")
    p.add_argument("--remote-option", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long an SSH or S3 remote may stay silent (default {DEFAULT_TIMEOUT:g}; 0: no limit)",
    )
    p.set_defaults(func=_fetch)

    p = sub.add_parser("site-config", help="print the config sites block matching a scenario")
    p.add_argument("--scenario", required=True)
    p.add_argument("--registry", default="resources/demo/registry")
    p.add_argument("--revision", default="v1")
    p.set_defaults(func=_site_config)

    p = sub.add_parser("datadict", help="render the data dictionary from schemas/")
    p.add_argument("--out", default="docs/data_dictionary.md")
    p.set_defaults(func=_datadict)

    p = sub.add_parser(
        "calibration",
        help="type-I error and CI coverage of the clinical and PET analyses on a scenario's layout",
    )
    p.add_argument("--scenario", required=True, help="scenario YAML with the consortium's layout")
    p.add_argument("--reps", type=int, default=200, help="replicate consortia per case")
    p.add_argument("--analyses", default="", help="e.g. clinical,pet.baseline (default: all)")
    p.add_argument("--regions", default="habenula", help="prediction regions, comma-separated")
    p.add_argument("--jobs", type=int, default=1, help="worker processes")
    p.set_defaults(func=_calibration)

    p = sub.add_parser(
        "verify",
        help="re-check a finished run: fetched data against its fetch manifests, tables and results "
        "against their recorded hashes, outputs against results/manifest.json; exit 1 on any drift",
    )
    p.add_argument("--dir", default=".", help="the workflow directory (default: here)")
    p.set_defaults(func=_verify)

    p = sub.add_parser("recovery", help="compare pooled results with a scenario's ground truth")
    p.add_argument("--truth", required=True)
    p.add_argument("--results", default="results/pooled")
    p.set_defaults(func=_recovery)
    return parser


def _verify(args: argparse.Namespace) -> None:
    from ketamap.integrity import verify_run

    problems, counts = verify_run(Path(args.dir))
    for line in problems:
        print(f"DRIFT {line}")
    checked = ", ".join(f"{n} {what}" for what, n in counts.items())
    if problems:
        raise KetamapError(
            f"{len(problems)} file(s) differ from their recorded hashes (checked {checked})"
        )
    print(f"verified {checked}: every file matches its recorded hash")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except KetamapError as exc:
        print(f"ketamap {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
