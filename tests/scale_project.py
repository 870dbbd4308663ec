"""The two projects of the planning-scale measurements, and their dry runs.

Used by ``benchmarks/dag_scale.py`` (timings at 30 to 1,500 sites, profiles) and by
``tests/test_scale.py`` (the CI bound at 300 sites). For N sites, two projects:

- **ketamap**: a copy of the workflow (Snakefile, workflow/, schemas/, config/, src/ketamap, the
  checkout's venv borrowed through a ``.venv`` symlink), as ``tests/workflow_project.py`` makes
  one, with a config of N sites and no ``demo`` section. The sites are PET, iEEG and behaviour
  sites in turn, each a copy of one of the default scenario's sites
  (:func:`ketamap.synth.site_configs`, reader options included) under a new id; they point at a
  registry that does not exist (a dry run never reads it). Its dry run imports the copy's
  ``src`` (``PYTHONPATH``), so what is measured is the code of the checkout the project was
  copied from, whatever the venv's editable install points at.
- **bare**: a plain Snakefile (no ketamap import, no input or params functions beyond two dict
  look-ups) with the same rules, job count and DAG shape: per-site fetch checkpoint -> per-site
  harmonize jobs (one per modality, iEEG sites with eyelid video get the behaviour job too) ->
  one combine job per table -> the pooled analyses and figures -> manifest -> all; every job has
  the same number of inputs (code files included: dummy files, as many as the ketamap rule's
  ``step_code`` lists) and outputs. Site ids are matched by a generic pattern, not by a list.

The bare rules use ``shell:`` (ketamap's ``run:`` blocks hand a step to a process of its own),
fixed params and resources, and no config file: those differences are part of what is measured.

Both projects start from the same state: nothing fetched, each site's fetch stamp
``resources/raw/.state/<site>.changed`` present (as ketamap's planning leaves it after the first
dry run), so the steady-state cost of a re-plan is what is timed. :func:`fetch_trees` adds fetched
data (the trees, fetch manifests, content ids and verified-tree state ketamap's fetch leaves).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
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


def ketamap_project(
    dest: Path, sites: list[dict], source: Path = REPO, per_session: bool = False
) -> Path:
    """The workflow of ``source`` (this checkout, or another tree of it) with ``sites``
    (``per_session``: with ``fetch.per_session``)."""
    dest.mkdir(parents=True)
    for name in COPIED:
        src = source / name
        if src.is_dir():
            shutil.copytree(
                src, dest / name, ignore=shutil.ignore_patterns("tmp", "cache", "__pycache__")
            )
        elif src.exists():
            shutil.copy2(src, dest / name)
    shutil.copytree(
        source / "src" / "ketamap",
        dest / "src" / "ketamap",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    (dest / ".venv").symlink_to(VENV_BIN.parent, target_is_directory=True)
    config = yaml.safe_load((dest / "config" / "config.yaml").read_text())
    del config["demo"]
    config["sites"] = sites
    config["atlas"] = {"registry": REGISTRY, "path": "datasets/atlas", "revision": "v1"}
    # One job per session, the most jobs the sessions can make (the default packs short ones):
    # what planning must scale to, and what the bare workflow mirrors.
    config["jobs"] = {"session_batch_seconds": 0}
    # per_session is the default; an older tree (``source``) may not have the key at all
    if per_session or "per_session" in (source / "schemas/config.schema.yaml").read_text():
        config.setdefault("fetch", {})["per_session"] = per_session
    (dest / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    write_stamps(dest, [s["id"] for s in sites] + ["atlas"])
    return dest


def fetch_trees(project: Path, sites: list[dict], sessions: int, per_session: bool = False) -> int:
    """Fetched data as ketamap's fetch leaves it: ``sessions`` sessions spread over the sites,
    each a few small files, with the fetch manifest, the content id and the verified-tree state.
    ``per_session``: as the fetch leaves it with ``fetch.per_session``: the site's own files only,
    every file in the manifest's ``listing`` and the storage plugin's index of the dataset.
    Returns the number of files written."""
    from ketamap import integrity
    from ketamap.harmonize.scatter import in_session_folder
    from ketamap.registry import _listing_md5, content_id, write_plugin_index

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
            data = f"{site['id']} {rel}\n".encode() * 32
            files.append({"path": rel, "md5": hashlib.md5(data).hexdigest(), "bytes": len(data)})
            if per_session and in_session_folder(rel):
                continue  # the session jobs' storage inputs retrieve these
            path = raw / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        manifest = {k: site[k] for k in ("registry", "path", "revision")} | {
            "files": files,
            "n_files": len(files),
        }
        if per_session:
            manifest |= {
                "site": site["id"],
                "files": [f for f in files if not in_session_folder(f["path"])],
                "listing": files,
                "commit": "0" * 40,
                "dvc_md5": _listing_md5({f["path"]: f["md5"] for f in files}) + ".dir",
            }
            manifest["n_files"] = len(manifest["files"])
            write_plugin_index(manifest, REGISTRY, raw_root / f"{site['id']}.dvc-index.json")
        integrity.fetch_manifest_path(raw).write_text(
            json.dumps(manifest, indent=2, sort_keys=True)
        )
        (raw_root / f"{site['id']}.content").write_text(content_id(manifest) + "\n")
        integrity.remember_verified(raw)
        n_files += len(files)
    return n_files


def project_pair(
    root: Path, tag: str, sites: list[dict], sessions: int = 0, per_session: bool = False
) -> tuple[Path, Path, int]:
    """ketamap's and the bare project (``root``/ketamap_<tag>, bare_<tag>) with ``sessions``
    sessions fetched (0: nothing), and the number of files fetched.

    Whole-site fetches: both get the same trees (hard links: same bytes, mtimes and inodes).
    ``per_session``: ketamap has the site's own files, the listing and the plugin's index (its
    sessions are storage inputs); bare has the whole trees, each session folder a plain input."""
    kp = ketamap_project(root / f"ketamap_{tag}", sites, per_session=per_session)
    bp = bare_project(root / f"bare_{tag}", sites, per_session=per_session)
    files = 0
    if sessions:
        files = fetch_trees(kp, sites, sessions, per_session=per_session)
        shutil.rmtree(bp / "resources" / "raw")
        if per_session:
            fetch_trees(bp, sites, sessions)
            write_stamps(bp, [s["id"] for s in sites] + ["atlas"])
            for site in sites:  # the fetch's index output, read by nothing here
                (bp / "resources" / "raw" / f"{site['id']}.dvc-index.json").write_text("{}\n")
        else:
            shutil.copytree(
                kp / "resources" / "raw", bp / "resources" / "raw", copy_function=os.link
            )
    return kp, bp, files


# -- the bare project ---------------------------------------------------------------------------


def code_count(*entries: str) -> int:
    """How many files a ketamap rule lists as its ``code`` input (``step_code``)."""
    with contextlib.chdir(REPO):
        return len(step_code(*entries))


def bare_snakefile(sites: list[dict], per_session: bool = False) -> tuple[str, dict[str, int]]:
    """A plain Snakefile with ketamap's rules, jobs and inputs per job; and its code file counts.
    ``per_session``: as ketamap's with ``fetch.per_session``, each session job and gather also takes
    its session folders as inputs (here the fetched folders; in ketamap the storage plugin's)."""
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
        codes[f"combine_{t}"] = code_count(
            "ketamap.harmonize", exact[t].exact[t].rpartition(".")[0]
        )
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
    fetch_index = '\n        index="resources/raw/{site}.dvc-index.json",' if per_session else ""
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
        content="resources/raw/{{site}}.content",{fetch_index}
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
        pieces = session_in = ""
        if h.sessions:
            # ketamap's per-session jobs: sessions read from the fetch manifest, once per site
            pieces = f"        pieces=pieces_{h.modality},\n"
            if per_session:
                index = '        dvc_index=ancient("resources/raw/{site}.dvc-index.json"),\n'
                session_in = index + (
                    '        sessions=lambda w: [f"resources/raw/{w.site}/"'
                    ' + w.batch.replace("_", "/", 1)],\n'
                )
                pieces += index + f"        sessions=session_dirs_{h.modality},\n"
            L.append(
                f"""
SESSIONS_{h.modality} = {{}}


def pieces_{h.modality}(wildcards):
    import json, os

    site = wildcards.site
    if site not in SESSIONS_{h.modality}:
        manifest = f"resources/raw/{{site}}.fetch.json"
        files = json.load(open(manifest))["files"] if os.path.exists(manifest) else []
        parts = [f["path"].split("/") for f in files]
        SESSIONS_{h.modality}[site] = sorted(
            {{
                f"{{p[0]}}_{{p[1]}}"
                for p in parts
                if (len(p) > 3 and p[2] in {h.sessions.split("|")!r})
                or (len(p) == 3 and "." in {h.sessions.split("|")!r})
            }}
        )
    return [
        f"resources/pieces/{{site}}/{h.modality}/{{s}}.zip" for s in SESSIONS_{h.modality}[site]
    ]


def session_dirs_{h.modality}(wildcards):
    pieces_{h.modality}(wildcards)
    return [
        f"resources/raw/{{wildcards.site}}/" + s.replace("_", "/", 1)
        for s in SESSIONS_{h.modality}[wildcards.site]
    ]


rule harmonize_{h.modality}_session:
    input:
{atlas}        raw=ancient("resources/raw/{{site}}"),
        content=ancient("resources/raw/{{site}}.content"),
        code=CODE["harmonize_{h.modality}"],
{session_in}    output:
        piece="resources/pieces/{{site}}/{h.modality}/{{batch}}.zip",
    log:
        "logs/harmonize/{{site}}/{h.modality}/{{batch}}.log",
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
            f"""
rule harmonize_{h.modality}:
    input:
{atlas}        raw=ancient("resources/raw/{{site}}"),
        content=ancient("resources/raw/{{site}}.content"),
        code=CODE["harmonize_{h.modality}"],
{pieces}    output:
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


def bare_project(dest: Path, sites: list[dict], per_session: bool = False) -> Path:
    dest.mkdir(parents=True)
    text, codes = bare_snakefile(sites, per_session)
    (dest / "Snakefile").write_text(text)
    for rule, n in codes.items():
        (dest / "code" / rule).mkdir(parents=True)
        for i in range(n):
            (dest / "code" / rule / f"m{i}.py").write_text("\n")
    write_stamps(dest, [s["id"] for s in sites] + ["atlas"])
    return dest


# -- running ------------------------------------------------------------------------------------


def tool_env(project: Path | None = None) -> dict[str, str]:
    """The venv first on PATH, no real key; a ketamap project imports its own copy of the code."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env['PATH']}"
    env.pop("KETAMAP_PSEUDONYM_KEY", None)
    if project is not None and (project / "src" / "ketamap").is_dir():
        env["PYTHONPATH"] = os.pathsep.join(
            [str(project / "src"), *filter(None, [env.get("PYTHONPATH")])]
        )
    return env


@dataclass
class DryRun:
    """One dry run in a fresh process."""

    wall: float  # seconds
    cpu: float  # user + system seconds of the process (and of the children it waited for)
    mb: float  # peak RSS
    text: str  # its output


def dry_run(project: Path, prefix: list[str] | None = None, log: str = "dryrun.log") -> DryRun:
    """``snakemake --dry-run --cores 2`` (or ``prefix`` + those arguments) in ``project``."""
    cmd = [*(prefix or [str(VENV_BIN / "snakemake")]), "--dry-run", "--cores", "2"]
    out = project / log
    with out.open("w") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=project, env=tool_env(project), stdout=fh, stderr=subprocess.STDOUT
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = out.read_text()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {project}:\n{text[-4000:]}")
    return DryRun(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, text)


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


def shape_differences(ketamap: tuple, bare: tuple) -> list[str]:
    """The rules whose job or input counts differ between two :func:`shape` results."""
    _, krules, kin = ketamap
    _, brules, bin_ = bare
    return [
        f"{r}: jobs {krules.get(r)} vs {brules.get(r)}, inputs {kin.get(r)} vs {bin_.get(r)}"
        for r in sorted(set(krules) | set(brules))
        if krules.get(r) != brules.get(r) or kin.get(r) != bin_.get(r)
    ]


def planning_ratio(
    ketamap: Path, bare: Path, rounds: int = 2, extra_rounds: int = 0, bound: float = 0.0
) -> tuple[float, dict[str, list[DryRun]]]:
    """ketamap's planning CPU time over the bare workflow's, best of the rounds of each.

    The two sides run in turn (bare, ketamap, bare, ...), so a busy spell of the machine hits
    both. While the ratio is above ``bound``, up to ``extra_rounds`` more rounds.
    """
    runs: dict[str, list[DryRun]] = {"bare": [], "ketamap": []}

    def one_round() -> float:
        for name, project in (("bare", bare), ("ketamap", ketamap)):
            runs[name].append(dry_run(project))
        return min(r.cpu for r in runs["ketamap"]) / min(r.cpu for r in runs["bare"])

    for _ in range(rounds):
        ratio = one_round()
    for _ in range(extra_rounds):
        if ratio <= bound:
            break
        ratio = one_round()
    return ratio, runs
