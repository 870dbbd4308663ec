"""Orchestration overhead per job (process start-up, imports, exit) as a share of compute (issue 13).

    .venv/bin/python benchmarks/overhead.py                     # default scenario, 2 cores (minutes)
    .venv/bin/python benchmarks/overhead.py --scenario small    # the test scenario (faster)
    .venv/bin/python benchmarks/overhead.py --imports-only      # only the import profile per job kind
    .venv/bin/python benchmarks/overhead.py --forkserver on     # one run, jobs.forkserver true

The workflow runs twice by default, with ``jobs.forkserver`` true (the default: on a local run
each job's step runs in a child of one server process that imported the libraries once,
:mod:`ketamap.jobserver`) and false (each job imports what its step needs), each in a fresh copy.

The whole workflow is run for real on a bundled scenario in a copy of the project (made as
``tests/workflow_project.py`` makes one; its dry runs and jobs import the copy's ``src``, so the
code of this checkout is what is measured): ``snakemake --profile workflow/profiles/default
--cores 2``, after the demo registry has been built (untimed: a real consortium has no such jobs).

Every job's ``run:`` block runs its step through :func:`ketamap.adapter.run_job`, in a process of
its own: a child of the fork server, or (``jobs.forkserver`` false) a new ``python -m
ketamap.adapter`` process. The step logs one line per job, ``step <function> compute <s> s,
start-up <s> s``: the step's own time, and the time from the job's ``run:`` block to the step
(the hand-over and the fork, or the new interpreter and ``ketamap.adapter``'s imports). Two
parts of a job's overhead happen where that line cannot see them, and are measured per job kind
in fresh processes, median of ``--repeat``:

- **lazy imports**: a step imports its own module, its modality's or analysis' module (and what
  that pulls in: MNE, statsmodels, matplotlib, ...) when it runs; that time is inside "compute" in
  the log. It is measured as the time to import those modules after ``ketamap.adapter``, moved
  from compute to overhead;
- **exit**: the step process's end after the step (it ends with ``os._exit``, as the job's does),
  measured as the wall time of a process doing the same imports minus the time it reached the end
  of them.

A job whose step ran in the fork server (its step line ends ``, in the fork server``) imports only
what the server had not when it forked (the server's chain of links imports its ``PRELOAD``
while it serves; a job forked before the end logs ``preloaded k/n``): probed in a process that first
imports those k modules. Its overhead is its start-up and those imports. The server's imports
are counted once, in a row of their own, as the CPU time its links spent importing (they import
alongside Snakemake's planning, since the fetch rules start the server while the run is planned,
and alongside the jobs: their wall time counts the cores' sharing, which the jobs' own wall time
counts too; the CPU time is what they took from the jobs; the wall time is printed as well). The
Snakemake main process's own work per
job (its thread for the job's ``run:`` block, checking outputs, the job records) is not in either:
it is reported as the run's wall time against the jobs' time on 2 cores.

Then ``python -X importtime`` of each job kind's imports (``ketamap.adapter``, the step's
module and what it imports): the heaviest top-level packages by cumulative import time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from workflow_project import make_project  # noqa: E402 - tests/ is not a package

VENV_PYTHON = REPO / ".venv" / "bin" / "python"
STEP_LINE = re.compile(r"step (\S+) compute ([0-9.]+) s, start-up ([0-9.]+) s")
FORKED = ", in the fork server"  # the step line's end when the step ran in the fork server
# ... after ", preloaded k/n" when the server had imported only k of its n preload modules
PRELOADED = re.compile(r", preloaded (\d+)/(\d+), in the fork server")

# The module of each job kind's step (the rules' run_job("module:function", ...)): imported by
# the step process when the step starts, with what the step then imports.
STEPS = {
    "fetch": "ketamap.registry",
    "harmonize": "ketamap.harmonize",
    "combine": "ketamap.harmonize",
    "pooled": "ketamap.pooled",
    "figure": "ketamap.pooled",
    "manifest": "ketamap.manifest",
}

# Run in a fresh process as `python -m ketamap.adapter` runs: seconds from the process's start to
# the end of ketamap.adapter's imports and of the step's imports; it ends as a step process ends.
# The process start is read as ketamap.adapter reads it.
PROBE = """
import os, time
from ketamap.adapter import process_age
{preload}
top = process_age()
t0 = time.perf_counter()
{step}
lazy = time.perf_counter() - t0
print(top, lazy, process_age(), flush=True)
os._exit(0)
"""


# What the analyses of a pooled module import when they fit (inside the functions that fit, so
# the figure jobs, which import the same modules, do not pay for them).
FITS = {
    "ketamap.pooled.clinical": [
        "statsmodels.formula.api",
        "statsmodels.stats.proportion",
        "scipy.stats",
    ],
    "ketamap.pooled.pet": ["statsmodels.api", "statsmodels.formula.api", "patsy", "scipy.stats"],
    "ketamap.pooled.ieeg": ["statsmodels.formula.api", "scipy.stats"],
    "ketamap.pooled.behaviour": ["statsmodels.stats.multitest", "scipy.stats"],
}


def job_kinds() -> dict[str, tuple[str, list[str]]]:
    """Job kind -> (its step's kind, the modules its step imports when it runs, its own first)."""
    from ketamap.harmonize import HARMONIZERS, exact_tables
    from ketamap.pooled import ANALYSES, FIGURES

    kinds: dict[str, tuple[str, list[str]]] = {
        "fetch": ("fetch", ["dvc.api", "dvc.scm"]),
        "combine": ("combine", ["pandas", "ketamap.schemas", "ketamap.ids"]),
        "manifest": ("manifest", ["ketamap.manifest"]),
    }
    for h in HARMONIZERS.values():
        kinds[f"harmonize {h.modality}"] = (
            "harmonize",
            ["ketamap.schemas", "ketamap.ids", "ketamap.integrity", h.module],
        )
        if h.sessions:  # its session jobs (logs/harmonize/<site>/<modality>/<batch>.log)
            kinds[f"harmonize {h.modality} session"] = (
                "harmonize",
                ["ketamap.schemas", "ketamap.ids", "ketamap.integrity", h.module],
            )
    for t, spec in exact_tables().items():
        kinds[f"combine {t}"] = ("combine", ["pandas", "ketamap.schemas", spec.module])
    for module in sorted({a.module for a in ANALYSES.values()}):
        draws = any(a.figure for a in ANALYSES.values() if a.module == module)
        kinds["pooled " + module.rsplit(".", 1)[-1]] = (
            "pooled",
            [
                "ketamap.schemas",
                module,
                *FITS.get(module, []),
                *(["ketamap.figures"] if draws else []),
            ],
        )
    for module in sorted({f.module for f in FIGURES.values()}):
        kinds["figure " + module.rsplit(".", 1)[-1]] = (
            "figure",
            ["ketamap.schemas", module, "ketamap.figures"],
        )
    return kinds


def kind_of(log: Path, logs: Path) -> str | None:
    """A job's kind from its log's path (the rules' log patterns)."""
    from ketamap.harmonize import exact_tables
    from ketamap.pooled import ANALYSES, FIGURES

    rel = log.relative_to(logs)
    top, name = rel.parts[0], log.name.removesuffix(".log")
    if top == "fetch":
        return "fetch"
    if top == "harmonize" and len(rel.parts) == 4:  # a session job: <site>/<modality>/<batch>
        return f"harmonize {rel.parts[2]} session"
    if top == "harmonize":
        return "harmonize " + name.rsplit(".", 1)[-1]
    if top == "tables":
        return f"combine {name}" if name in exact_tables() else "combine"
    if top == "pooled" and name in ANALYSES:
        return "pooled " + ANALYSES[name].module.rsplit(".", 1)[-1]
    if top == "figures":
        spec = FIGURES.get(name)
        if spec is None:  # an analysis' own figure is drawn by its pooled job
            return None
        return "figure " + spec.module.rsplit(".", 1)[-1]
    if rel.as_posix() == "manifest.log":
        return "manifest"
    return None


SRC = REPO / "src"  # the ketamap code the import probes import (--src)


def env_for(project: Path | None) -> dict[str, str]:
    """The venv first on PATH, no real key, and the project's (or --src's) ketamap imported."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_PYTHON.parent}{os.pathsep}{env['PATH']}"
    env.pop("KETAMAP_PSEUDONYM_KEY", None)
    env["PYTHONPATH"] = str(project / "src" if project else SRC)
    return env


def probe(
    kind: tuple[str, list[str]], repeat: int, cwd: Path, preloaded: int | None = None
) -> dict[str, float]:
    """Median over fresh processes: start-up to ketamap.adapter, the step's imports, exit.
    ``preloaded``: the fork server's child, which inherits the server's imports (the first
    ``preloaded`` modules of PRELOAD, -1: all) and times only what its step imports beyond them."""
    from ketamap.jobserver import PRELOAD

    step, modules = kind
    code = PROBE.format(
        preload=""
        if preloaded is None
        else "\n".join(f"import {m}" for m in PRELOAD[: None if preloaded < 0 else preloaded]),
        step="\n".join(f"import {m}" for m in [STEPS[step], *modules]),
    )
    rows = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = subprocess.run(
            [str(VENV_PYTHON), "-c", code],
            cwd=cwd,
            env=env_for(None),
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - t0
        if out.returncode != 0:
            raise SystemExit(f"the import probe of {step} failed:\n{out.stderr[-3000:]}")
        top, lazy, end = (float(v) for v in out.stdout.split())
        rows.append((top, lazy, max(wall - end, 0.0)))
    return {
        "startup": statistics.median(r[0] for r in rows),
        "lazy": statistics.median(r[1] for r in rows),
        "exit": statistics.median(r[2] for r in rows),
    }


def import_profile(kind: tuple[str, list[str]], cwd: Path, top: int) -> list[tuple[str, float]]:
    """The heaviest packages a job kind imports: (name, cumulative s), by ``-X importtime``."""
    step, modules = kind
    code = "; ".join(f"import {m}" for m in ["ketamap.adapter", STEPS[step], *modules])
    err = subprocess.run(
        [str(VENV_PYTHON), "-X", "importtime", "-c", code],
        cwd=cwd,
        env=env_for(None),
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    # A package's cost: the cumulative time of its imports that no import of the same package
    # encloses (what it and all it pulled in cost). ketamap's modules are listed by module.
    cost: dict[str, float] = defaultdict(float)
    lines = [
        (int(m.group(1)) / 1e6, len(m.group(2)) // 2, m.group(3))
        for m in (
            re.match(r"import time:\s+\d+ \|\s+(\d+) \| ( *)(\S+)$", line)
            for line in err.splitlines()
        )
        if m
    ]
    total = sum(cum for cum, depth, _ in lines if depth == 0)
    enclosing: list[str] = []  # importtime prints an import after what it imported: read upwards
    for cum, depth, name in reversed(lines):
        key = ".".join(name.split(".")[:3]) if name.startswith("ketamap") else name.split(".")[0]
        del enclosing[depth:]
        if key not in enclosing:
            cost[key] += cum
        enclosing.append(key)
    ranked = sorted(cost.items(), key=lambda kv: -kv[1])
    return [("(all)", total), *ranked[:top]]


def run_workflow(project: Path, cores: int) -> float:
    """Build the demo registry (untimed), then run the workflow: its wall seconds."""
    snakemake = [str(VENV_PYTHON.parent / "snakemake"), "--profile", "workflow/profiles/default"]
    env = env_for(project)
    subprocess.run(
        [*snakemake, "--cores", str(cores), "resources/demo/registry"],
        cwd=project,
        env=env,
        check=True,
        capture_output=True,
    )
    t0 = time.perf_counter()
    proc = subprocess.run(
        [*snakemake, "--cores", str(cores)], cwd=project, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"the workflow failed:\n{proc.stderr[-5000:]}")
    return time.perf_counter() - t0


def job_lines(project: Path) -> list[tuple[str, float, float, int | None]]:
    """(kind, step s, start-up s, forked) of every job that logged its step. forked: None (its
    own process), -1 (in the fork server, all of its preload imported), k (the server had
    imported only its first k preload modules)."""
    logs = project / "logs"
    jobs = []
    for log in sorted(logs.rglob("*.log")):
        kind = kind_of(log, logs)
        text = log.read_text(errors="replace")
        m = STEP_LINE.search(text)
        if kind and m:
            partial = PRELOADED.search(text)
            forked = (int(partial.group(1)) if partial else -1) if FORKED in text else None
            jobs.append((kind, float(m.group(2)), float(m.group(3)), forked))
    return jobs


def server_seconds(project: Path) -> tuple[float, float]:
    """The fork server's import time (its log): (wall s, CPU s); zeros when the run started none.

    Its links import alongside the run's jobs: their wall time counts the cores' sharing with the
    jobs (whose own wall time grows by as much), their CPU time is what the imports took from the
    jobs. The CPU time is the server's overhead in the table."""
    log = project / ".snakemake/log/ketamap-forkserver.log"
    text = log.read_text() if log.is_file() else ""
    found = re.findall(r"modules imported in ([0-9.]+) s \(([0-9.]+) s CPU\)", text)
    if not found:
        return 0.0, 0.0
    wall, cpu = found[-1]  # its last line: when it stopped, or had all
    return float(wall), float(cpu)


def table(
    jobs: list[tuple[str, float, float, int | None]],
    probes: dict[str, dict[str, float]],
    server: float,
) -> tuple[str, float]:
    """The per-kind table, and overhead as a share of compute.

    A job whose step ran in the fork server imported only what the server had not (probed as
    ``<kind> forked <k>``, with the server's first k preload modules imported, -1: all): its overhead is its start-up (its run: block to the child's step:
    hand-over and fork) and those imports. The server's imports count once, as a row of their
    own."""
    per: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0.0, 0.0, 0.0])
    for kind, step, startup, forked in jobs:
        lazy = probes[kind if forked is None else f"{kind} forked {forked}"]["lazy"]
        row = per[kind]
        row[0] += 1
        row[1] += step - lazy  # compute
        row[2] += startup
        row[3] += lazy
        row[4] += 0.0 if forked is not None else probes[kind]["exit"]
        row[5] += forked is not None
    if server:
        per["fork server imports"] = [0, 0.0, 0.0, server, 0.0, 0.0]
    compute = sum(r[1] for r in per.values())
    overhead = sum(r[2] + r[3] + r[4] for r in per.values())
    head = (
        f"{'job kind':<22} {'jobs':>4} {'forked':>6} {'compute s':>9} {'start-up':>8} "
        f"{'lazy imp':>8} {'exit':>5} {'overhead s':>10} {'overhead %':>10} {'share':>6}"
    )
    out = [head, "-" * len(head)]
    for kind in sorted(per, key=lambda k: -(per[k][2] + per[k][3] + per[k][4])):
        n, c, s, lz, ex, fk = per[kind]
        o = s + lz + ex
        out.append(
            f"{kind:<22} {n:>4} {fk:>6.0f} {c:>9.1f} {s:>8.1f} {lz:>8.1f} {ex:>5.1f} {o:>10.1f} "
            f"{100 * o / c if c else float('inf'):>9.0f}% {100 * o / overhead:>5.0f}%"
        )
    out.append("-" * len(head))
    n = sum(r[0] for r in per.values())
    forked = sum(r[5] for r in per.values())
    out.append(
        f"{'all':<22} {n:>4} {forked:>6.0f} {compute:>9.1f} {'':>8} {'':>8} {'':>5} "
        f"{overhead:>10.1f} {100 * overhead / compute:>9.1f}% {100:>5}%"
    )
    return "\n".join(out), overhead / compute


def measure(root: Path, args: argparse.Namespace, kinds: dict, forkserver: bool) -> float:
    """Run the workflow once with ``jobs.forkserver`` as given; print its table; its share."""
    name = "forkserver" if forkserver else "no-forkserver"

    def edit(config: dict) -> None:
        config.setdefault("jobs", {})["forkserver"] = forkserver

    project = make_project(root / name, args.scenario, config_edit=edit)
    if args.src:  # the project runs that code
        shutil.rmtree(project / "src" / "ketamap")
        shutil.copytree(
            SRC / "ketamap",
            project / "src" / "ketamap",
            symlinks=True,  # contracts -> the project's schemas
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    wall = run_workflow(project, args.cores)
    jobs = job_lines(project)
    probes = {
        k: probe(kinds[k], args.repeat, root) for k in sorted({j[0] for j in jobs if j[3] is None})
    }
    for k, n in sorted({(j[0], j[3]) for j in jobs if j[3] is not None}):
        probes[f"{k} forked {n}"] = probe(kinds[k], args.repeat, root, preloaded=n)
    busy = sum(
        step + startup + (0.0 if forked is not None else probes[k]["exit"])
        for k, step, startup, forked in jobs
    )
    server_wall, server = server_seconds(project)
    print(
        f"jobs.forkserver {str(forkserver).lower()}: scenario {args.scenario}, --cores "
        f"{args.cores}, {os.cpu_count()} CPUs: {len(jobs)} jobs logged a step, "
        f"{sum(j[3] is not None for j in jobs)} of them in the fork server "
        f"({sum(j[3] is not None and j[3] >= 0 for j in jobs)} before it had imported all); "
        f"run {wall:.1f} s wall, jobs "
        f"{busy:.1f} s (start to exit), {busy / args.cores:.1f} s on {args.cores} cores"
        + (
            f"; the server's imports {server:.1f} s CPU ({server_wall:.1f} s wall)"
            if server
            else ""
        )
    )
    print(
        "start-up: the job's run: block -> its step (measured in each job); lazy imp: the "
        f"step's module imports (in the fork server: those it had not imported); exit: the step "
        f"process's end (both median of {args.repeat} fresh processes per kind; none for a step "
        "in the fork server)\n"
    )
    text, share = table(jobs, probes, server)
    print(text, flush=True)
    print()
    return share


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="default", help="a bundled scenario's name")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5, help="fresh processes per job kind")
    parser.add_argument("--top", type=int, default=6, help="packages listed per job kind")
    parser.add_argument("--imports-only", action="store_true", help="skip the workflow run")
    parser.add_argument("--keep", type=Path, help="make the project here and keep it")
    parser.add_argument(
        "--forkserver",
        choices=("both", "on", "off"),
        default="both",
        help="run with jobs.forkserver true, false, or once each (default)",
    )
    parser.add_argument(
        "--src",
        type=Path,
        help="import profile of another ketamap source tree (e.g. before a change)",
    )
    args = parser.parse_args(argv)
    if args.src:
        global SRC
        SRC = args.src.resolve()

    kinds = job_kinds()
    with contextlib.ExitStack() as stack:
        if args.keep:
            root = args.keep.resolve()
            root.mkdir(parents=True, exist_ok=True)
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="overhead_")))
        if not args.imports_only:
            modes = {"both": (True, False), "on": (True,), "off": (False,)}[args.forkserver]
            shares = {}
            for forkserver in modes:
                shares[forkserver] = measure(root, args, kinds, forkserver)
            if len(shares) == 2:
                print(
                    f"overhead: {100 * shares[True]:.1f} % of compute with the fork server, "
                    f"{100 * shares[False]:.1f} % without (target 10 %)\n"
                )
        print(f"Imports per job kind (python -X importtime; cumulative s, top {args.top}):")
        for kind in kinds:
            prof = import_profile(kinds[kind], root, args.top)
            print(
                f"  {kind:<22} {prof[0][1]:5.2f} s: "
                + ", ".join(f"{name} {s:.2f}" for name, s in prof[1:])
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
