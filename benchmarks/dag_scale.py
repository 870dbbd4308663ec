"""Planning cost at scale: ``snakemake --dry-run`` of ketamap vs a bare workflow of the same shape.

    .venv/bin/python benchmarks/dag_scale.py            # 30/300/1500 sites, 1500 sites fetched, profiles
    .venv/bin/python benchmarks/dag_scale.py --sites 1500 --sessions 0 --repeat 2 --profile ""

For each size N, two projects are written in a temporary folder:

- **ketamap**: a copy of the workflow (Snakefile, workflow/, schemas/, config/, src/ketamap, the
  checkout's venv borrowed through a ``.venv`` symlink), as ``tests/workflow_project.py`` makes
  one, with a config of N sites and no ``demo`` section. The sites are PET, iEEG and behaviour
  sites in turn, each a copy of one of the default scenario's sites
  (:func:`ketamap.synth.site_configs`, reader options included) under a new id; they point at a
  registry that does not exist (a dry run never reads it).
- **bare**: a plain Snakefile (no ketamap import, no input or params functions beyond two dict
  look-ups) with the same rules, job count and DAG shape: per-site fetch checkpoint -> per-site
  harmonize jobs (one per modality, iEEG sites with eyelid video get the behaviour job too) ->
  one combine job per table -> the pooled analyses and figures -> manifest -> all; every job has
  the same number of inputs (code files included: dummy files, as many as the ketamap rule's
  ``step_code`` lists) and outputs. Site ids are matched by a generic pattern, not by a list.

The bare rules use ``shell:`` (ketamap's use ``script:``), fixed params and resources, and no
config file: those differences are part of what is measured.

Both projects start from the same state: nothing fetched, each site's fetch stamp
``resources/raw/.state/<site>.changed`` present (as ketamap's planning leaves it after the first
dry run), so the steady-state cost of a re-plan is what is timed. Timed: ``snakemake --dry-run
--cores 2`` in a fresh process, wall time and the process's peak RSS (``os.wait4``). The dry
run's job list is parsed on both sides to check the shape (jobs per rule, inputs per job).
``--sessions`` adds a project of ``--sessions-sites`` sites whose data is fetched (the trees, fetch
manifests, content ids and verified-tree state ketamap's fetch leaves), the same trees hard-linked
into the bare project: what planning costs once the data is there.

Then the projects named by ``--profile`` are run once more on each side under cProfile: ketamap's
extra time split into causes, ketamap's functions by cumulative time, and the Snakemake and
library functions whose own time grows most over the bare workflow's.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import yaml

from ketamap import synth
from ketamap.codedeps import step_code
from ketamap.harmonize import HARMONIZERS, exact_tables, site_groups, table_sites
from ketamap.pooled import ANALYSES, FIGURES, planned, planned_figures, result_path, table_path

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
REGISTRY = "https://git.example.org/consortium/registry.git"  # never contacted by a dry run
COPIED = ("Snakefile", "workflow", "schemas", "config", "dvc.yaml", ".dvc", ".dvcignore")
MODALITIES = ("pet", "ieeg", "behaviour")


# -- the ketamap project ------------------------------------------------------------------------


def site_entries(n: int) -> list[dict]:
    """N site entries: PET, iEEG and behaviour in turn, each a renamed default-scenario site."""
    scenario = synth.load_scenario(REPO / "config" / "scenarios" / "default.yaml")
    templates: dict[str, list[dict]] = defaultdict(list)
    for entry in synth.site_configs(scenario, REGISTRY, "v1"):
        templates[entry["modality"]].append(entry)
    sites = []
    for i in range(n):
        modality = MODALITIES[i % 3]
        pool = templates[modality]
        entry = yaml.safe_load(yaml.safe_dump(pool[(i // 3) % len(pool)]))  # deep copy
        entry["id"] = f"{entry['id']}_{i:05d}"
        entry["path"] = f"datasets/{entry['id']}"
        entry["trial"] = f"{entry['trial']}-{i:05d}"
        sites.append(entry)
    return sites


def write_stamps(project: Path, ids: list[str]) -> None:
    """The fetch stamps as ketamap's planning writes them the first time (content, mtime 1970)."""
    state = project / "resources" / "raw" / ".state"
    state.mkdir(parents=True, exist_ok=True)
    for site in ids:
        stamp = state / f"{site}.changed"
        stamp.write_text("fetched data unchanged\n")
        os.utime(stamp, ns=(0, 0))


def ketamap_project(dest: Path, sites: list[dict]) -> Path:
    dest.mkdir(parents=True)
    for name in COPIED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(
                src, dest / name, ignore=shutil.ignore_patterns("tmp", "cache", "__pycache__")
            )
        elif src.exists():
            shutil.copy2(src, dest / name)
    shutil.copytree(
        REPO / "src" / "ketamap",
        dest / "src" / "ketamap",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    (dest / ".venv").symlink_to(VENV_BIN.parent, target_is_directory=True)
    config = yaml.safe_load((dest / "config" / "config.yaml").read_text())
    del config["demo"]
    config["sites"] = sites
    config["atlas"] = {"registry": REGISTRY, "path": "datasets/atlas", "revision": "v1"}
    (dest / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    write_stamps(dest, [s["id"] for s in sites] + ["atlas"])
    return dest


def fetch_trees(project: Path, sites: list[dict], sessions: int) -> int:
    """Fetched data as ketamap's fetch leaves it: ``sessions`` sessions spread over the sites,
    each a few small files, with the fetch manifest, the content id and the verified-tree state.
    Returns the number of files written."""
    from ketamap import integrity
    from ketamap.registry import content_id

    raw_root = project / "resources" / "raw"
    per_site = [sessions // len(sites) + (i < sessions % len(sites)) for i in range(len(sites))]
    kinds = {
        "pet": ("pet/{p}_pet.nii.gz", "pet/{p}_pet.json", "pet/{p}_recording-manual_blood.tsv"),
        "ieeg": ("ieeg/{p}_ieeg.edf", "ieeg/{p}_channels.tsv", "ieeg/{p}_events.tsv"),
        "behaviour": ("beh/{p}_beh.nwb", "beh/{p}_events.tsv", "beh/{p}_beh.json"),
    }
    n_files = 0
    for site, n in zip(sites, per_site, strict=True):
        raw = raw_root / site["id"]
        rels = ["participants.tsv", "dataset_description.json"]
        for k in range(n):
            sub, ses = f"sub-{k // 2 + 1:03d}", f"ses-{k % 2 + 1:02d}"
            rels += [f"{sub}/{ses}/" + t.format(p=f"{sub}_{ses}") for t in kinds[site["modality"]]]
        files = []
        for rel in rels:
            path = raw / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            data = f"{site['id']} {rel}\n".encode() * 32
            path.write_bytes(data)
            files.append({"path": rel, "md5": hashlib.md5(data).hexdigest()})
        manifest = {k: site[k] for k in ("registry", "path", "revision")} | {
            "files": files,
            "n_files": len(files),
        }
        integrity.fetch_manifest_path(raw).write_text(
            json.dumps(manifest, indent=2, sort_keys=True)
        )
        (raw_root / f"{site['id']}.content").write_text(content_id(manifest) + "\n")
        integrity.remember_verified(raw)
        n_files += len(files)
    return n_files


# -- the bare project ---------------------------------------------------------------------------


def code_count(*entries: str) -> int:
    """How many files a ketamap rule lists as its ``code`` input (``step_code``)."""
    with contextlib.chdir(REPO):
        return len(step_code(*entries))


def bare_snakefile(sites: list[dict]) -> tuple[str, dict[str, int]]:
    """A plain Snakefile with ketamap's rules, jobs and inputs per job; and its code file counts."""
    config = {"sites": sites, "atlas": {"registry": REGISTRY}}
    groups = site_groups(config)
    tsites = table_sites(config)
    exact = exact_tables()
    concat = [t for t in tsites if t not in exact]
    exact_present = [t for t in tsites if t in exact]
    analyses = planned(groups)
    figures = planned_figures(groups)
    codes: dict[str, int] = {"fetch": code_count("ketamap.registry")}
    for h in HARMONIZERS.values():
        codes[f"harmonize_{h.modality}"] = code_count("ketamap.harmonize", h.module)
    codes["combine_table"] = code_count("ketamap.harmonize")
    for t in exact_present:
        codes[f"combine_{t}"] = code_count("ketamap.harmonize", exact[t].module)
    modules = sorted({ANALYSES[a].module for a in ANALYSES})
    for module in modules:
        codes["pooled_" + module.rsplit(".", 1)[-1]] = code_count("ketamap.pooled", module)
    for rule in sorted({f.rule for f in FIGURES.values()}):
        mods = {FIGURES[f].module for f in FIGURES if FIGURES[f].rule == rule}
        codes[rule] = code_count("ketamap.pooled", *mods)

    def analysis_tables(a: str) -> dict[str, str]:
        spec = ANALYSES[a]
        tables = list(spec.tables) + [t for t, g in spec.optional.items() if groups[g]]
        return {t: table_path(t) for t in tables}

    def figure_sources(f: str) -> dict[str, str]:
        spec = FIGURES[f]
        sources = dict(spec.inputs) | {k: v for k, (v, g) in spec.optional.items() if groups[g]}
        return {
            arg: table_path(what) if kind == "table" else result_path(what)
            for arg, (kind, _, what) in ((a, s.partition(":")) for a, s in sources.items())
        }

    L = []  # noqa: N806 - the Snakefile's lines
    L.append(
        "# Bare workflow written by benchmarks/dag_scale.py: ketamap's DAG shape, plain rules."
    )
    L.append(f"GROUPS = {dict(groups)!r}")
    L.append(f"TABLE_SITES = {dict(tsites)!r}")
    L.append(
        f"CODE = {{r: [f'code/{{r}}/m{{i}}.py' for i in range(n)] for r, n in {codes!r}.items()}}"
    )
    L.append(f"ANALYSIS_INPUTS = { ({a: analysis_tables(a) for a in analyses})!r}")
    L.append(f"FIGURE_INPUTS = { ({f: figure_sources(f) for f in figures})!r}")
    fetch_manifests = [f"resources/raw/{s['id']}.fetch.json" for s in sites]
    if groups["pet"]:
        fetch_manifests.append("resources/raw/atlas.fetch.json")
    tables_out = [table_path(t) for t in concat + exact_present]
    pooled_out = [result_path(a) for a in analyses]
    figs_out = [f"results/figures/{a}.png" for a in analyses if ANALYSES[a].figure] + [
        f"results/figures/{f}.png" for f in figures
    ]
    L.append(f"FETCHED = {fetch_manifests!r}")
    L.append(f"OUTPUTS = {tables_out + pooled_out + figs_out!r}")
    L.append(
        f"""

wildcard_constraints:
    site="[a-z][a-z0-9_]*",
    table={"|".join(concat)!r},


rule all:
    default_target: True
    input:
        OUTPUTS,
        "results/manifest.json",


checkpoint fetch:
    input:
        changed="resources/raw/.state/{{site}}.changed",
        code=CODE["fetch"],
    output:
        data=directory("resources/raw/{{site}}"),
        manifest="resources/raw/{{site}}.fetch.json",
        content="resources/raw/{{site}}.content",
    log:
        "logs/fetch/{{site}}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        site="{{site}}",
    shell:
        "touch {{output}}"


checkpoint fetch_atlas:
    input:
        changed="resources/raw/.state/atlas.changed",
        code=CODE["fetch"],
    output:
        data=directory("resources/raw/atlas"),
        manifest="resources/raw/atlas.fetch.json",
        content="resources/raw/atlas.content",
    log:
        "logs/fetch/atlas.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "touch {{output}}"
"""
    )
    for h in HARMONIZERS.values():
        if not groups[h.sites]:
            continue
        atlas = (
            '        atlas=ancient("resources/raw/atlas"),\n'
            '        atlas_content=ancient("resources/raw/atlas.content"),\n'
            if h.atlas
            else ""
        )
        outs = "".join(f'        {t}="results/sites/{{site}}/{t}.parquet",\n' for t in h.tables)
        L.append(
            f"""
rule harmonize_{h.modality}:
    input:
{atlas}        raw=ancient("resources/raw/{{site}}"),
        content=ancient("resources/raw/{{site}}.content"),
        code=CODE["harmonize_{h.modality}"],
    output:
{outs}    log:
        "logs/harmonize/{{site}}.{h.modality}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    params:
        modality="{h.modality}",
        site="{{site}}",
    shell:
        "touch {{output}}"
"""
        )
    L.append(
        """
rule combine_table:
    input:
        tables=lambda w: expand("results/sites/{site}/{table}.parquet", site=TABLE_SITES[w.table], table=w.table),
        code=CODE["combine_table"],
    output:
        "results/tables/{table}.parquet",
    log:
        "logs/tables/{table}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        table="{table}",
    shell:
        "touch {output}"
"""
    )
    for t in exact_present:
        L.append(
            f"""
rule combine_{t}:
    input:
        tables=expand("results/sites/{{site}}/{t}.parquet", site=TABLE_SITES["{t}"]),
        code=CODE["combine_{t}"],
    output:
        "{table_path(t)}",
    log:
        "logs/tables/{t}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "touch {{output}}"
"""
        )
    for module in modules:
        members = [a for a in ANALYSES.values() if a.module == module]
        kind = members[0]
        name = kind.name if len(members) == 1 else "{analysis}"
        second = (
            f'        figure="results/figures/{name}.png",\n'
            if kind.figure
            else f'        metrics="results/metrics/{module.rsplit(".", 1)[-1]}.json",\n'
        )
        alternatives = "|".join(re.escape(a.name) for a in members)
        L.append(
            f"""
rule {kind.rule}:
    input:
        unpack(lambda w: ANALYSIS_INPUTS["{name}".format(**w)]),
        code=CODE["{kind.rule}"],
    output:
        result="results/pooled/{name}.parquet",
{second}    log:
        "logs/pooled/{name}.log",
    wildcard_constraints:
        analysis={alternatives!r},
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    params:
        analysis="{name}",
    shell:
        "touch {{output}}"
"""
        )
    for rule in sorted({f.rule for f in FIGURES.values()}):
        members = [f for f in FIGURES if FIGURES[f].rule == rule]
        alternatives = "|".join(re.escape(f) for f in members)
        L.append(
            f"""
rule {rule}:
    input:
        unpack(lambda w: FIGURE_INPUTS[w.figure]),
        code=CODE["{rule}"],
    output:
        "results/figures/{{figure}}.png",
    log:
        "logs/figures/{{figure}}.log",
    wildcard_constraints:
        figure={alternatives!r},
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "touch {{output}}"
"""
        )
    L.append(
        """
rule manifest:
    input:
        fetched=FETCHED,
        outputs=OUTPUTS,
    output:
        "results/manifest.json",
    log:
        "logs/manifest.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        config="config",
    shell:
        "touch {output}"
"""
    )
    return "\n".join(L), codes


def bare_project(dest: Path, sites: list[dict]) -> Path:
    dest.mkdir(parents=True)
    text, codes = bare_snakefile(sites)
    (dest / "Snakefile").write_text(text)
    for rule, n in codes.items():
        (dest / "code" / rule).mkdir(parents=True)
        for i in range(n):
            (dest / "code" / rule / f"m{i}.py").write_text("\n")
    write_stamps(dest, [s["id"] for s in sites] + ["atlas"])
    return dest


# -- running and measuring ----------------------------------------------------------------------


def tool_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env['PATH']}"
    env.pop("KETAMAP_PSEUDONYM_KEY", None)
    return env


def dry_run(project: Path, prefix: list[str] | None = None, log: str = "dryrun.log"):
    """Run the dry run in a fresh process: (wall seconds, peak RSS MB, its output)."""
    cmd = [*(prefix or [str(VENV_BIN / "snakemake")]), "--dry-run", "--cores", "2"]
    out = project / log
    with out.open("w") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=project, env=tool_env(), stdout=fh, stderr=subprocess.STDOUT
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = out.read_text()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {project}:\n{text[-4000:]}")
    return wall, usage.ru_maxrss / 1024, text


def shape(text: str) -> tuple[int, dict[str, int], dict[str, int]]:
    """From a dry run's output: total jobs, jobs per rule, input files per rule (summed)."""
    jobs: Counter = Counter()
    inputs: Counter = Counter()
    rule = None
    for line in text.splitlines():
        m = re.match(r"(?:local)?(?:rule|checkpoint) (\w+):$", line)
        if m:
            rule = m.group(1)
            jobs[rule] += 1
            continue
        m = re.match(r"\s+input: (.*)$", line)
        if m and rule:
            inputs[rule] += len(m.group(1).split(", "))
    return sum(jobs.values()), dict(jobs), dict(inputs)


def measure(root: Path, n: int, repeat: int, sessions: int = 0) -> dict:
    sites = site_entries(n)
    tag = f"{n}_{sessions}ses" if sessions else f"{n}"
    kp = ketamap_project(root / f"ketamap_{tag}", sites)
    bp = bare_project(root / f"bare_{tag}", sites)
    row: dict = {"sites": n, "sessions": sessions}
    if sessions:
        # Both projects get the same fetched trees (hard links: same bytes, mtimes and inodes).
        row["files"] = fetch_trees(kp, sites, sessions)
        shutil.rmtree(bp / "resources" / "raw")
        shutil.copytree(kp / "resources" / "raw", bp / "resources" / "raw", copy_function=os.link)
    for name, project in (("bare", bp), ("ketamap", kp)):
        runs = [dry_run(project) for _ in range(repeat)]
        row[name] = {
            "s": [r[0] for r in runs],
            "mb": max(r[1] for r in runs),
            "shape": shape(runs[-1][2]),
        }
    return row


def check_shape(row: dict) -> str:
    _, krules, kin = row["ketamap"]["shape"]
    _, brules, bin_ = row["bare"]["shape"]
    diffs = [
        f"{r}: jobs {krules.get(r)} vs {brules.get(r)}, inputs {kin.get(r)} vs {bin_.get(r)}"
        for r in sorted(set(krules) | set(brules))
        if krules.get(r) != brules.get(r) or kin.get(r) != bin_.get(r)
    ]
    return "same jobs per rule and inputs per rule" if not diffs else "DIFFERS: " + "; ".join(diffs)


def format_table(rows: list[dict]) -> str:
    head = (
        f"{'sites':>6} {'fetched':>16} {'jobs':>6} | {'bare s':>12} {'ketamap s':>12} {'ratio':>6} | "
        f"{'bare MB':>8} {'ketamap MB':>10} {'ratio':>6}"
    )
    lines = [head, "-" * len(head)]
    for row in rows:
        b, k = row["bare"], row["ketamap"]
        bs, ks = min(b["s"]), min(k["s"])
        fetched = f"{row['sessions']} ses/{row['files']} f" if row["sessions"] else "nothing"
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
            f"{b['mb']:>8.0f} {k['mb']:>10.0f} {k['mb'] / b['mb']:>5.2f}x{runs}"
        )
    return "\n".join(lines)


# -- profile ------------------------------------------------------------------------------------


def profile(root: Path, tag: str) -> tuple[pstats.Stats, pstats.Stats, Path, float, float]:
    """ketamap's and the bare workflow's dry run of one measured size, each under cProfile."""
    kp, bp = root / f"ketamap_{tag}", root / f"bare_{tag}"
    prof = [str(VENV_BIN / "python"), "-m", "cProfile", "-o"]
    kw, _, _ = dry_run(
        kp, [*prof, str(root / f"ketamap_{tag}.prof"), "-m", "snakemake"], "prof.log"
    )
    bw, _, _ = dry_run(bp, [*prof, str(root / f"bare_{tag}.prof"), "-m", "snakemake"], "prof.log")
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
    (
        "script: directive, source located and read per job",
        "snakemake/script/__init__.py",
        "get_source",
        "cum",
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
        "--profile",
        default="1500,fetched",
        help="profile these measured projects: a site count of --sites and/or 'fetched' ('': none)",
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
            t0 = time.perf_counter()
            rows.append(measure(root, args.sessions_sites, args.repeat, args.sessions))
            print(
                f"{args.sessions_sites} sites, {args.sessions} sessions fetched: "
                f"{check_shape(rows[-1])} ({time.perf_counter() - t0:.0f} s)",
                file=sys.stderr,
            )
        print(
            f"snakemake --dry-run --cores 2, fresh process each; {os.cpu_count()} CPUs, "
            f"best of {args.repeat}; MB = peak RSS of the snakemake process"
        )
        print(format_table(rows), flush=True)
        for what in [w.strip() for w in args.profile.split(",") if w.strip()]:
            if what == "fetched":
                if not args.sessions:
                    continue
                tag = f"{args.sessions_sites}_{args.sessions}ses"
                title = f"{args.sessions_sites} sites, {args.sessions} sessions fetched"
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
