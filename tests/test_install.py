"""Issue 11: an installed ketamap (a wheel, not the checkout) finds its table contracts and
reference tables as package data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import REPO

CONTRACTS = {
    "columns.yaml",
    "tables.yaml",
    "pet_units.yaml",
    "scales.yaml",
    "config.schema.yaml",
    "scenario.schema.yaml",
}

PROBE = """
import json, ketamap
from ketamap import scales, schemas
from ketamap.harmonize.pet import sidecar as pet_sidecar
from ketamap.paths import schema_dir
from ketamap.synth.scenario import load_schema
print(json.dumps({
    "package": ketamap.__file__,
    "schemas": str(schema_dir()),
    "link": schema_dir().is_symlink(),
    "subjects": schemas.get_table("subjects").field_names,
    "scales": sorted(scales.load_scales()),
    "units": sorted(pet_sidecar.load_units()),
    "scenario_schema": sorted(load_schema()),
}))
"""


def _pip(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", args[0], "-q", *args[1:]],
        check=True,
        capture_output=True,
        text=True,
    )


def test_installed_wheel_reads_its_contracts_without_the_checkout(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    shutil.copytree(
        REPO / "src",
        source / "src",
        symlinks=True,
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    shutil.copytree(REPO / "schemas", source / "schemas")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    wheels = tmp_path / "wheels"
    _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source))
    (wheel,) = wheels.glob("ketamap-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"ketamap/contracts/{name}" for name in CONTRACTS} <= names, sorted(names)

    site = tmp_path / "site"
    _pip("install", "--no-deps", "--target", str(site), str(wheel))
    env = {k: v for k, v in os.environ.items() if k != "KETAMAP_SCHEMAS"}
    env["PYTHONPATH"] = str(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=elsewhere, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout)
    assert got["package"].startswith(str(site)), got  # the wheel's copy, not the checkout's
    assert got["schemas"] == str(site / "ketamap" / "contracts") and not got["link"], got
    assert "subject_id" in got["subjects"]
    assert got["scales"] and got["units"] and "properties" in got["scenario_schema"], got
    for name in CONTRACTS:  # regular files carrying the checkout's bytes
        installed = site / "ketamap" / "contracts" / name
        assert installed.read_bytes() == (REPO / "schemas" / name).read_bytes(), name
