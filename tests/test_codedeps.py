"""Issue 11: a rule's code inputs are derived from what its step imports, and the DVC stages'
deps match them. These tests fail when either drifts."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from ketamap.codedeps import closure, module_file, step_code
from ketamap.harmonize import HARMONIZERS
from ketamap.pooled import ANALYSES, FIGURES
from test_workflow import snakemake
from workflow_project import make_project

SRC = REPO / "src" / "ketamap"
STEP_MODULES = sorted(
    {h.module for h in HARMONIZERS.values()}
    | {a.module for a in ANALYSES.values()}
    | {f.module for f in FIGURES.values()}
    | {"ketamap.harmonize", "ketamap.pooled", "ketamap.registry", "ketamap.synth"}
)


@pytest.mark.parametrize("module", STEP_MODULES)
def test_derived_code_covers_every_module_the_step_really_imports(module: str) -> None:
    """Import the step in a fresh interpreter: every ketamap module Python loads is in the
    closure read from the source (which also holds the imports made inside functions)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys, {module}; print(*sorted(m for m in sys.modules if m.split('.')[0] == 'ketamap'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = {module_file(m, SRC) for m in proc.stdout.split()} - {None}
    derived = set(closure([module], SRC))
    assert loaded <= derived, sorted(str(p.relative_to(SRC)) for p in loaded - derived)


def test_each_modality_depends_on_its_own_package_and_the_shared_modules_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(REPO)  # as the workflow runs: paths relative to the checkout
    code = {h.modality: set(step_code("ketamap.harmonize", h.module)) for h in HARMONIZERS.values()}
    for modality, files in code.items():
        others = {m for m in HARMONIZERS if m != modality}
        assert not [f for f in files if any(f"harmonize/{o}/" in f for o in others)], files
        assert not [f for f in files if "/synth/" in f or "/pooled/" in f], files
        assert f"src/ketamap/harmonize/{modality}/__init__.py" in files
        assert "src/ketamap/harmonize/bids.py" in files
    # what the old hand-kept lists got wrong: behaviour never imports the clinical reader, the
    # clinical reader needs the scale tables, PET its unit tables
    assert "src/ketamap/harmonize/clinical/__init__.py" not in code["behaviour"]
    assert {"src/ketamap/scales.py", "schemas/scales.yaml"} <= code["clinical"]
    assert {"src/ketamap/harmonize/pet/sidecar.py", "schemas/pet_units.yaml"} <= code["pet"]


def _planned_code(project: Path, target: str) -> dict[str, set[str]]:
    """Rule -> the code files (src/ketamap, schemas) among its jobs' inputs, from a real dry run."""
    out = snakemake(project, "--dry-run", target).stdout
    code: dict[str, set[str]] = {}
    for block in out.split("\n\n"):
        head = re.search(r"^(?:local)?(?:rule|checkpoint) (\w+):", block, re.M)
        inputs = re.search(r"^\s+input: (.*)$", block, re.M)
        if head and inputs:
            files = {f.strip() for f in inputs.group(1).split(",")}
            code.setdefault(head.group(1), set()).update(
                f for f in files if f.startswith(("src/ketamap/", "schemas/"))
            )
    return code


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def test_dvc_stage_deps_match_the_code_inputs_of_their_rules(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", scenario="default")
    tables = _planned_code(project, "all_tables")
    everything = _planned_code(project, "all_pooled")
    pooled = {rule: files for rule, files in everything.items() if rule not in tables}
    assert {"harmonize_pet", "harmonize_ieeg", "harmonize_behaviour", "fetch"} <= set(tables)
    assert {"pooled_pet", "pooled_ieeg", "pooled_behaviour", "figure_behaviour"} <= set(pooled)
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for stage, rules in (("tables", tables), ("pooled", pooled)):
        deps = [d for d in stages[stage]["deps"] if d.startswith(("src/", "schemas"))]
        code = set().union(*rules.values())
        missing = sorted(f for f in code if not _covered(f, deps))
        assert not missing, f"dvc.yaml stage {stage} lacks {missing}"
        stale = sorted(d for d in deps if not any(_covered(f, [d]) for f in code))
        assert not stale, f"dvc.yaml stage {stage} depends on {stale}, which no rule reads"
