"""Planning cost at scale: ``snakemake --dry-run`` of ketamap vs a bare workflow of the same shape.

    .venv/bin/python benchmarks/dag_scale.py            # 30/300/1500 sites, 1500 sites fetched, profiles
    .venv/bin/python benchmarks/dag_scale.py --sites 1500 --sessions 0 --repeat 2 --profile ""

For each size N, two projects are written in a temporary folder by ``tests/scale_project.py``
(shared with the CI scale test ``tests/test_scale.py``; its docstring describes them): a copy of
ketamap's workflow with N generated sites, and a bare Snakefile with the same rules, job count,
inputs per job and DAG shape but plain rules.

Timed: ``snakemake --dry-run --cores 2`` in a fresh process, wall time and the process's peak RSS
(``os.wait4``). The dry run's job list is parsed on both sides to check the shape (jobs per rule,
inputs per job). ``--sessions`` adds a project of ``--sessions-sites`` sites whose data is fetched
(the trees, fetch manifests, content ids and verified-tree state ketamap's fetch leaves), the same
trees hard-linked into the bare project: what planning costs once the data is there.

Then the projects named by ``--profile`` are run once more on each side under cProfile: ketamap's
extra time split into causes, ketamap's functions by cumulative time, and the Snakemake and
library functions whose own time grows most over the bare workflow's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from scale_project import (  # noqa: E402 - tests/ is not a package
    VENV_BIN,
    dry_run,
    project_pair,
    shape,
    shape_differences,
    site_entries,
)

# -- measuring ----------------------------------------------------------------------------------


def measure(root: Path, n: int, repeat: int, sessions: int = 0, per_session: bool = False) -> dict:
    sites = site_entries(n)
    tag = f"{n}_{sessions}ses" if sessions else f"{n}"
    tag += "_per_session" if per_session else ""
    kp, bp, files = project_pair(root, tag, sites, sessions, per_session)
    row: dict = {"sites": n, "sessions": sessions, "per_session": per_session, "files": files}
    for name, project in (("bare", bp), ("ketamap", kp)):
        runs = [dry_run(project) for _ in range(repeat)]
        row[name] = {
            "s": [r.wall for r in runs],
            "cpu": [r.cpu for r in runs],
            "mb": max(r.mb for r in runs),
            "shape": shape(runs[-1].text),
        }
    return row


def check_shape(row: dict) -> str:
    diffs = shape_differences(row["ketamap"]["shape"], row["bare"]["shape"])
    return "same jobs per rule and inputs per rule" if not diffs else "DIFFERS: " + "; ".join(diffs)


def format_table(rows: list[dict]) -> str:
    head = (
        f"{'sites':>6} {'fetched':>16} {'jobs':>6} | {'bare s':>12} {'ketamap s':>12} {'ratio':>6} | "
        f"{'bare MB':>8} {'ketamap MB':>10} {'ratio':>6} | {'CPU ratio':>9}"
    )
    lines = [head, "-" * len(head)]
    for row in rows:
        b, k = row["bare"], row["ketamap"]
        bs, ks = min(b["s"]), min(k["s"])
        cpu = min(k["cpu"]) / min(b["cpu"])
        fetched = f"{row['sessions']} ses/{row['files']} f" if row["sessions"] else "nothing"
        fetched += " per-ses" if row.get("per_session") else ""
        runs = (
            ""
            if len(b["s"]) == 1
            else "  (runs: bare "
            + ", ".join(f"{s:.1f}" for s in b["s"])
            + "; ketamap "
            + ", ".join(f"{s:.1f}" for s in k["s"])
            + ")"
        )
        lines.append(
            f"{row['sites']:>6} {fetched:>16} {k['shape'][0]:>6} | {bs:>12.1f} {ks:>12.1f} {ks / bs:>5.2f}x | "
            f"{b['mb']:>8.0f} {k['mb']:>10.0f} {k['mb'] / b['mb']:>5.2f}x | {cpu:>8.2f}x{runs}"
        )
    return "\n".join(lines)


# -- profile ------------------------------------------------------------------------------------


def profile(root: Path, tag: str) -> tuple[pstats.Stats, pstats.Stats, Path, float, float]:
    """ketamap's and the bare workflow's dry run of one measured size, each under cProfile."""
    kp, bp = root / f"ketamap_{tag}", root / f"bare_{tag}"
    prof = [str(VENV_BIN / "python"), "-m", "cProfile", "-o"]
    kw = dry_run(kp, [*prof, str(root / f"ketamap_{tag}.prof"), "-m", "snakemake"], "prof.log").wall
    bw = dry_run(bp, [*prof, str(root / f"bare_{tag}.prof"), "-m", "snakemake"], "prof.log").wall
    return (
        pstats.Stats(str(root / f"ketamap_{tag}.prof")),
        pstats.Stats(str(root / f"bare_{tag}.prof")),
        kp,
        kw,
        bw,
    )


def short(filename: str, project: Path) -> str:
    for marker in ("site-packages/", str(project) + "/", "/lib/python3."):
        if marker in filename:
            rest = filename.split(marker, 1)[1]
            return rest.split("/", 1)[1] if marker == "/lib/python3." else rest
    return filename.replace(str(REPO) + "/", "")


def key_of(func: tuple, project: Path) -> tuple[str, int, str]:
    filename, line, name = func
    return short(filename, project), line, name


def is_ketamap(filename: str, project: Path) -> bool:
    """Code of ketamap's own: the package (copy or checkout) and the Snakefile and rules."""
    return (
        "/ketamap/" in filename
        or filename.startswith(str(project))
        or filename.endswith((".smk", "Snakefile"))
    )


# Where the extra planning time goes: (label, file suffix or "~" for a builtin, function, measure).
# Function names are Snakemake 9's; a bucket whose function is not found shows 0.
BUCKETS = (
    (
        "config.yaml read by Snakemake (PyYAML/yte, pure Python)",
        "snakemake/common/configfile.py",
        "load_configfile",
        "cum",
    ),
    (
        "wildcards substituted into patterns (re.sub; the site list is inlined)",
        "~",
        "<method 'sub' of 're.Pattern' objects>",
        "own",
    ),
    (
        "output patterns compiled to regexes (site list alternation)",
        "snakemake/io/__init__.py",
        "regex",
        "cum",
    ),
    (
        "target -> producer prefix lookup",
        "snakemake/common/prefix_lookup.py",
        "_common_prefix",
        "own",
    ),
    ("inspect.signature of input/params/resources functions", "inspect.py", "signature", "cum"),
    (
        "ketamap functions and what they call (input/params/resources functions, check_fetched, ...)",
        None,
        None,
        "ketamap",
    ),
)


def ketamap_frame(func: tuple, project: Path) -> bool:
    return is_ketamap(func[0], project) and func[2] != "<module>"


def bucket_value(stats: pstats.Stats, project: Path, suffix, name, measure) -> float:
    """A bucket's seconds; "ketamap": time inside ketamap's functions and what they call, counted
    where Snakemake or the Snakefile's top level calls into them (nested calls counted once)."""
    total = 0.0
    for func, (_cc, _nc, tt, ct, callers) in stats.stats.items():
        if measure == "ketamap":
            if ketamap_frame(func, project):
                total += sum(v[3] for c, v in callers.items() if not ketamap_frame(c, project))
        elif func[2] == name and (func[0] == "~" if suffix == "~" else func[0].endswith(suffix)):
            total += ct if measure == "cum" else tt
    return total


def hotspots(kstats: pstats.Stats, bstats: pstats.Stats, project: Path, top: int) -> str:
    bare = {key_of(f, project): v for f, v in bstats.stats.items()}
    ktotal = max(v[3] for v in kstats.stats.values())
    btotal = max(v[3] for v in bstats.stats.values())
    out = [
        f"Where the extra time goes (profiled: ketamap {ktotal:.1f} s, bare {btotal:.1f} s, "
        f"extra {ktotal - btotal:.1f} s):",
        f"{'ketamap':>8} {'bare':>7} {'extra':>7}  cost",
    ]
    attributed = 0.0
    for label, suffix, name, measure in BUCKETS:
        k = bucket_value(kstats, project, suffix, name, measure)
        b = bucket_value(bstats, project, suffix, name, measure)
        attributed += k - b
        out.append(f"{k:8.2f} {b:7.2f} {k - b:7.2f}  {label}")
    out.append(
        f"{'':8} {'':7} {ktotal - btotal - attributed:7.2f}  the rest (Snakemake's per-job "
        "bookkeeping of more IO items, flags and callables; profiler overhead)"
    )
    ours, driven = [], []
    for func, (_cc, nc, tt, ct, _callers) in kstats.stats.items():
        key = key_of(func, project)
        if is_ketamap(func[0], project):
            ours.append((ct, tt, nc, key))
        else:
            b = bare.get(key, (0, 0, 0.0, 0.0))
            driven.append((tt - b[2], tt, b[2], ct - b[3], nc, b[1], key))
    ours.sort(reverse=True)
    driven.sort(reverse=True)
    out.append("")
    out.append(f"ketamap code, top {top} by cumulative time:")
    out.append(f"{'cum s':>7} {'own s':>7} {'calls':>9}  function")
    for ct, tt, nc, (f, line, name) in ours[:top]:
        out.append(f"{ct:7.2f} {tt:7.2f} {nc:9d}  {f}:{line}({name})")
    out.append("")
    out.append(
        f"Snakemake and library functions, top {top} by own time gained over the bare workflow's:"
    )
    out.append(
        f"{'+own s':>7} {'own k':>7} {'own b':>7} {'+cum s':>7} {'calls k':>9} {'calls b':>9}  function"
    )
    for extra, tt, btt, extra_ct, nc, bnc, (f, line, name) in driven[:top]:
        out.append(
            f"{extra:7.2f} {tt:7.2f} {btt:7.2f} {extra_ct:7.2f} {nc:9d} {bnc:9d}  {f}:{line}({name})"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", default="30,300,1500", help="comma-separated site counts")
    parser.add_argument(
        "--repeat", type=int, default=1, help="dry runs per size and side (min kept)"
    )
    parser.add_argument(
        "--sessions",
        type=int,
        default=10000,
        help="also time a project whose data is fetched: this many sessions (0: skip)",
    )
    parser.add_argument(
        "--sessions-sites", type=int, default=1500, help="sites of the fetched project"
    )
    parser.add_argument(
        "--per-session",
        choices=("no", "also", "only"),
        default="also",
        help="the fetched project with fetch.per_session too (the session folders as the DVC "
        "storage plugin's inputs, planned from its index), or only that",
    )
    parser.add_argument(
        "--profile",
        default="1500,fetched",
        help="profile these measured projects: a site count of --sites, 'fetched' and/or "
        "'per_session' ('': none)",
    )
    parser.add_argument("--top", type=int, default=25, help="hotspots listed")
    parser.add_argument("--keep", type=Path, help="build the projects here and keep them")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sites.split(",") if s.strip()]
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if args.keep:
            root = args.keep.resolve()
            root.mkdir(parents=True, exist_ok=True)
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dag_scale_")))
        rows = []
        for n in sizes:
            t0 = time.perf_counter()
            rows.append(measure(root, n, args.repeat))
            print(
                f"{n} sites: {check_shape(rows[-1])} ({time.perf_counter() - t0:.0f} s)",
                file=sys.stderr,
            )
        if args.sessions:
            modes = {"no": [False], "also": [False, True], "only": [True]}[args.per_session]
            for per_session in modes:
                t0 = time.perf_counter()
                rows.append(
                    measure(root, args.sessions_sites, args.repeat, args.sessions, per_session)
                )
                print(
                    f"{args.sessions_sites} sites, {args.sessions} sessions fetched"
                    f"{' per session' if per_session else ''}: "
                    f"{check_shape(rows[-1])} ({time.perf_counter() - t0:.0f} s)",
                    file=sys.stderr,
                )
        print(
            f"snakemake --dry-run --cores 2, fresh process each; {os.cpu_count()} CPUs, "
            f"best of {args.repeat}; MB = peak RSS of the snakemake process; CPU = its user + "
            "system time"
        )
        print(format_table(rows), flush=True)
        for what in [w.strip() for w in args.profile.split(",") if w.strip()]:
            if what in ("fetched", "per_session"):
                if not args.sessions:
                    continue
                tag = f"{args.sessions_sites}_{args.sessions}ses"
                title = f"{args.sessions_sites} sites, {args.sessions} sessions fetched"
                if what == "per_session":
                    tag, title = tag + "_per_session", title + " per session"
            else:
                if int(what) not in sizes:
                    continue
                tag, title = what, f"{what} sites, nothing fetched"
            kstats, bstats, project, kw, bw = profile(root, tag)
            print(
                f"\n== cProfile, {title}: ketamap {kw:.1f} s, bare {bw:.1f} s (wall, under the "
                "profiler) ==\n"
            )
            print(hotspots(kstats, bstats, project, args.top), flush=True)
    print(f"\n{time.perf_counter() - start:.0f} s in all", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
