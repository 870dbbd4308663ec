"""Projects for the end-to-end tests: a copy of the workflow in a temporary folder, run for real.

Each project is a copy of the workflow files with a small scenario, so the tests never touch the
checkout's own results. ``tests/conftest.py`` runs the small scenario once per session (the
``pipeline`` fixture) for the tests of the workflow and of its report.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import yaml

from conftest import REPO, venv_bin
from ketamap import synth
from ketamap.demo import apply_analysis_options

TABLES = {
    "results/tables/subjects.parquet": "subjects",
    "results/tables/clinical_scores.parquet": "clinical_scores",
    "results/tables/pet_regional.parquet": "pet_regional",
    "results/tables/pet_sessions.parquet": "pet_sessions",
    "results/pooled/clinical.madrs_change.parquet": "pooled_result",
    **{
        f"results/pooled/pet.{name}.parquet": "pooled_result"
        for name in (
            "baseline_trd_vs_hc",
            "ketamine_x_time",
            "change_vs_improvement",
            "response_prediction",
        )
    },
}


def tool_env() -> dict[str, str]:
    """The environment of the tools a test runs: the project's venv first on PATH, no real key."""
    env = dict(os.environ)
    env["PATH"] = f"{venv_bin()}{os.pathsep}{env['PATH']}"
    env.pop("KETAMAP_PSEUDONYM_KEY", None)
    return env


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in ``cwd``; with ``check``, a failure shows the ends of its output."""
    proc = subprocess.run(cmd, cwd=cwd, env=tool_env(), capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def make_project(dest: Path, scenario: str = "small", config_edit=None) -> Path:
    """A copy of the workflow with its config pointed at a bundled scenario."""
    dest.mkdir(parents=True)
    for name in (
        "Snakefile",
        "workflow",
        "schemas",
        "config",
        "dvc.yaml",
        ".dvc",
        ".dvcignore",
        ".gitignore",
    ):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(
                src, dest / name, ignore=shutil.ignore_patterns("tmp", "cache", "__pycache__")
            )
        else:
            shutil.copy2(src, dest / name)
    shutil.copytree(
        REPO / "src" / "ketamap",
        dest / "src" / "ketamap",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    # dvc.yaml calls the project's venv; this copy borrows the checkout's (the partner-flow test
    # builds real ones in real clones).
    (dest / ".venv").symlink_to(venv_bin().parent, target_is_directory=True)
    config = yaml.safe_load((dest / "config" / "config.yaml").read_text())
    config["demo"]["scenario"] = f"config/scenarios/{scenario}.yaml"
    scen = synth.load_scenario(dest / config["demo"]["scenario"])
    config["sites"] = synth.site_configs(
        scen, config["demo"]["registry"], config["demo"]["release"]
    )
    apply_analysis_options(config, synth.analysis_options(scen))
    if config_edit:
        config_edit(config)
    (dest / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return dest


def hashes(project: Path) -> dict[str, str]:
    return {
        p: hashlib.sha256((project / p).read_bytes()).hexdigest()
        for p in [*TABLES, "results/manifest.json"]
    }


def broken_registry(base: Path, breaks: dict, scenario: str = "small") -> Path:
    """A scenario's datasets, some broken (site -> change of its folder), released into a
    registry outside the workflow."""
    from ketamap.registry import build_registry

    sites = base / "sites"
    synth.generate(REPO / f"config/scenarios/{scenario}.yaml", sites)
    for site, breaker in breaks.items():
        breaker(sites / site)
    build_registry(sites, base / "registry", str(base / "remote"), "v1")
    return base / "registry"
