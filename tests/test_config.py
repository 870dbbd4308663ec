"""What a scenario's ground truth assumes reaches the analyses (issue 9, finding 6)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from ketamap.cli import main
from ketamap.demo import resolve_demo_sites
from ketamap.errors import ConfigError

CONFIG = yaml.safe_load((REPO / "config/config.yaml").read_text())
SCENARIOS = REPO / "config" / "scenarios"


def _scenario_with(tmp_path: Path, edit) -> str:
    scenario = yaml.safe_load((SCENARIOS / "small.yaml").read_text())
    edit(scenario)
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(scenario, sort_keys=False))
    return str(path)


def test_make_run_scenario_takes_the_scenario_remission_threshold(tmp_path: Path) -> None:
    path = _scenario_with(tmp_path, lambda s: s["clinical"].update(remission_threshold=12))
    config = copy.deepcopy(CONFIG) | {"scenario": path}
    resolve_demo_sites(config)
    assert config["clinical"]["remission_threshold"] == 12
    assert config["pet"]["reference_region"] == "cerebellum"


def test_a_planted_predictor_region_is_pre_specified(tmp_path: Path) -> None:
    path = _scenario_with(
        tmp_path,
        lambda s: s["pet"]["effects"].update(
            response_predictor={"region": "acc", "correlation": 0.5}
        ),
    )
    config = copy.deepcopy(CONFIG) | {"scenario": path}
    resolve_demo_sites(config)
    assert config["analyses"]["pet.response_prediction"]["regions"] == ["habenula", "acc"]


def test_listed_demo_sites_must_use_the_scenario_options() -> None:
    config = copy.deepcopy(CONFIG)
    config["clinical"]["remission_threshold"] = 12
    with pytest.raises(ConfigError, match=r"clinical\.remission_threshold") as err:
        resolve_demo_sites(config)
    message = str(err.value)
    assert "ground truth assumes 10" in message and "make run SCENARIO=" in message
    config = copy.deepcopy(CONFIG)
    config["behaviour"]["sustained_window_s"] = {"human": [0.5, 3.0], "mouse": [0.5, 5.0]}
    with pytest.raises(ConfigError, match=r"behaviour\.sustained_window_s"):
        resolve_demo_sites(config)


def test_calibration_command_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "calibration",
            "--scenario",
            str(SCENARIOS / "clinical_only.yaml"),
            "--reps",
            "30",
            "--analyses",
            "clinical",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "| `clinical.madrs_change` | arm_difference | clinical_only | 30 |" in out
    assert "type-I error" in out and "coverage" in out


_PARSE = """
import json, sys, yaml
from ketamap.config import validate_config
from ketamap.demo import resolve_demo_sites
config = validate_config(yaml.safe_load(open(sys.argv[1])))
config["scenario"] = sys.argv[2]
resolve_demo_sites(config, cache=sys.argv[3])
print(json.dumps({"sites": config["sites"], "synth": "ketamap.synth" in sys.modules}))
"""


def test_demo_sites_are_derived_once_then_read_without_importing_the_generators(
    tmp_path: Path,
) -> None:
    """Issue 11: a workflow parse must not import ketamap.synth (about 2 s, on every SLURM job)."""
    import subprocess
    import sys

    from ketamap import synth

    scenario = _scenario_with(tmp_path, lambda s: None)
    cache = tmp_path / "cache"

    def parse(path: str) -> dict:
        proc = subprocess.run(
            [sys.executable, "-c", _PARSE, str(REPO / "config/config.yaml"), path, str(cache)],
            capture_output=True,
            text=True,
            check=True,
        )
        return dict(json.loads(proc.stdout))

    first, second = parse(scenario), parse(scenario)
    assert first["synth"] and not second["synth"]
    demo = CONFIG["demo"]
    fresh = synth.site_configs(synth.load_scenario(scenario), demo["registry"], demo["release"])
    assert first["sites"] == second["sites"] == json.loads(json.dumps(fresh))
    # A comment changes nothing; another value is derived again, under another key.
    Path(scenario).write_text("# a comment\n" + Path(scenario).read_text())
    assert not parse(scenario)["synth"]
    edited = _scenario_with(tmp_path, lambda s: s["sites"][0].update(id="ycu_rct2"))
    third = parse(edited)
    assert third["synth"] and third["sites"][0]["id"] == "ycu_rct2"
    assert len(list(cache.glob("demo-sites-*.json"))) == 2


def test_a_site_cannot_be_named_atlas_and_sites_are_found_after_edits() -> None:
    """`atlas` names the shared atlas' fetched data (the workflow's site wildcard excludes it)."""
    from ketamap.config import site_by_id, validate_config

    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config.pop("demo")
    bad = copy.deepcopy(config)
    bad["sites"][0]["id"] = "atlas"
    with pytest.raises(ConfigError, match=r"sites.*atlas"):
        validate_config(bad)
    sites = config["sites"]
    assert site_by_id(config, sites[1]["id"]) is sites[1]
    sites[1] = {**sites[1], "id": "renamed_site"}  # edited in place after it was indexed
    assert site_by_id(config, "renamed_site") is sites[1]
    with pytest.raises(ConfigError):
        site_by_id(config, "no_such_site")
