"""Tests of the synthetic consortium generator (clinical part).

The generator is the answer key of every end-to-end test, so these tests check it against the
published numbers it must mirror and against an independent re-implementation of its model.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from conftest import REPO as REPO_ROOT
from ketamap.errors import ConfigError
from ketamap.paths import schema_dir
from ketamap.synth import generate, load_scenario, site_configs

SCENARIOS = REPO_ROOT / "config" / "scenarios"
DEFAULT = SCENARIOS / "default.yaml"
SMALL = SCENARIOS / "small.yaml"
NULL = SCENARIOS / "null.yaml"
# Leucht et al. 2018 anchors, written out here independently of schemas/scales.yaml.
HAMD = np.array([0, 10, 20, 30, 40, 46.15])
MADRS = np.array([0, 13, 26, 39, 52, 60])


def tree_hashes(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root``, keyed by relative path."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def write_variant(tmp_path: Path, source: Path, change: Any, name: str = "variant.yaml") -> Path:
    """Write a modified copy of a scenario file; ``change`` edits the parsed YAML in place."""
    data = yaml.safe_load(source.read_text())
    change(data)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def read_tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False, dtype=str)


def madrs_change(site_dir: Path, score: str, column: str) -> pd.DataFrame:
    """Per-participant arm and MADRS change (post minus baseline) read from the written files."""
    parts = read_tsv(site_dir / "participants.tsv").set_index("participant_id")
    scores = read_tsv(site_dir / score)
    scores[column] = scores[column].astype(float)
    wide = scores.pivot(index="participant_id", columns="session_id", values=column)
    parts["change"] = wide["ses-post"] - wide["ses-pre"]
    return parts


@pytest.fixture(scope="module")
def default_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("default")
    generate(DEFAULT, out / "consortium")
    return out / "consortium"


@pytest.fixture(scope="module")
def null_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("null")
    generate(NULL, out / "consortium")
    return out / "consortium"


# --------------------------------------------------------------------------- scenario schema


@pytest.mark.parametrize("path", [DEFAULT, SMALL, NULL], ids=lambda p: p.stem)
def test_shipped_scenarios_load_with_defaults(path: Path) -> None:
    scenario = load_scenario(path)
    ids = [s["id"] for s in scenario["sites"]]
    assert ids[:3] == ["ycu_rct", "keio_hc", "ycu_obs"]
    # the default also holds the eye-puff study: two iEEG sites and two mouse labs
    assert ids[3:] == (
        ["site_a_ieeg", "site_b_ieeg", "lab_nwb_mice", "lab_dlc_mice"] if path == DEFAULT else []
    )
    assert scenario["clinical"]["remission_threshold"] == 10
    assert all("trailing_newline" in s for s in scenario["sites"])


def test_misspelled_key_is_named(tmp_path: Path) -> None:
    path = write_variant(tmp_path, SMALL, lambda d: d["sites"][0].update(sexstyle="word"))
    with pytest.raises(ConfigError, match=r"sites\[0\]\.sexstyle.*unknown key 'sexstyle'") as err:
        load_scenario(path)
    assert "did you mean 'sex_style'" in str(err.value)
    assert err.value.field == "sites[0].sexstyle"
    assert "Traceback" not in str(err.value)


def test_misspelled_top_level_key_is_preferred_over_missing_one(tmp_path: Path) -> None:
    path = write_variant(tmp_path, SMALL, lambda d: d.update(sed=d.pop("seed")))
    with pytest.raises(ConfigError, match=r"unknown key 'sed'.*did you mean 'seed'"):
        load_scenario(path)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d.update(seed="abc"), "seed"),
        (lambda d: d["sites"][0]["groups"]["trd"]["arms"].update(ketamine="ten"), "ketamine"),
        (lambda d: d["sites"][1].update(scale="hamd"), r"sites\[1\]\.scale"),
        (lambda d: d["clinical"]["change"]["placebo"].update(sd=-1), r"placebo\.sd"),
        (lambda d: d["sites"][2].update(trailing_newline="no"), "trailing_newline"),
    ],
)
def test_wrong_type_or_value_is_rejected(tmp_path: Path, change: Any, field: str) -> None:
    path = write_variant(tmp_path, SMALL, change)
    with pytest.raises(ConfigError, match=field):
        load_scenario(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["sites"][2].update(id="ycu_rct"), "used twice"),
        (lambda d: d["sites"][2].update(id_format="hc-{n}"), "letters and digits"),
        (lambda d: d["sites"][0].update(session_labels={"baseline": "ses-pre"}), "post"),
        (lambda d: d["sites"][0]["groups"]["trd"].update(n=3), "exactly one of"),
        (lambda d: d["sites"][0].update(acq_start="2021-02-30"), "calendar date"),
    ],
)
def test_semantic_problems_are_config_errors(tmp_path: Path, change: Any, message: str) -> None:
    path = write_variant(tmp_path, SMALL, change)
    with pytest.raises(ConfigError, match=message):
        load_scenario(path)


def test_duplicate_yaml_key_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(SMALL.read_text() + "seed: 5\n")
    with pytest.raises(ConfigError, match="'seed' appears twice"):
        load_scenario(path)


def test_schema_describes_every_property_and_closes_every_object() -> None:
    schema = yaml.safe_load((schema_dir() / "scenario.schema.yaml").read_text())
    problems: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and node.get("additionalProperties") is not False:
                problems.append(f"{where}: object without additionalProperties: false")
            for key, sub in node.get("properties", {}).items():
                if "description" not in sub:
                    problems.append(f"{where}.{key}: no description")
            for key, sub in node.items():
                walk(sub, f"{where}.{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                walk(sub, f"{where}[{i}]")

    walk(schema, "schema")
    assert problems == []


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    generate(SMALL, tmp_path / "a")
    generate(SMALL, tmp_path / "b")
    first = tree_hashes(tmp_path / "a")
    assert first == tree_hashes(tmp_path / "b")
    other = write_variant(tmp_path, SMALL, lambda d: d.update(seed=d["seed"] + 1))
    generate(other, tmp_path / "c")
    changed = tree_hashes(tmp_path / "c")
    assert changed.keys() == first.keys()
    for site in ("ycu_rct", "keio_hc", "ycu_obs"):
        assert changed[f"{site}/participants.tsv"] != first[f"{site}/participants.tsv"]


def test_adding_a_site_leaves_the_other_sites_untouched(tmp_path: Path) -> None:
    def add_site(d: dict[str, Any]) -> None:
        extra = copy.deepcopy(d["sites"][2])
        extra.update(id="aaa_extra", trial="extra-trial")
        d["sites"].insert(0, extra)

    generate(SMALL, tmp_path / "before")
    generate(write_variant(tmp_path, SMALL, add_site), tmp_path / "after")
    before, after = tree_hashes(tmp_path / "before"), tree_hashes(tmp_path / "after")
    for path, digest in before.items():
        if path != "ground_truth.json":
            assert after[path] == digest, path
    assert any(p.startswith("aaa_extra/") for p in after)


def test_output_folder_must_be_empty_unless_overwriting_a_previous_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    generate(SMALL, out)
    with pytest.raises(ConfigError, match="not empty"):
        generate(SMALL, out)
    (out / "stale.txt").write_text("x")
    generate(SMALL, out, overwrite=True)
    assert not (out / "stale.txt").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="not a generator output"):
        generate(SMALL, foreign, overwrite=True)
    assert (foreign / "keep.txt").exists()


# --------------------------------------------------------------------------- default consortium


def test_default_counts(default_out: Path) -> None:
    rct = read_tsv(default_out / "ycu_rct" / "participants.tsv")
    assert list(rct.columns) == ["participant_id", "age", "sex", "group", "arm"]
    assert (rct["group"] == "TRD").sum() == 34
    assert rct["arm"].value_counts().to_dict() == {"KET": 17, "PBO": 17}
    assert set(rct["sex"]) <= {"1", "2"}
    assert rct["participant_id"].iloc[0] == "sub-YCU001"
    hc = 0
    for site, label in (("keio_hc", "control"), ("ycu_obs", "HC")):
        parts = read_tsv(default_out / site / "participants.tsv")
        assert list(parts.columns) == ["participant_id", "age", "sex", "group"]
        assert set(parts["group"]) == {label}
        hc += len(parts)
    assert hc == 49


def test_default_site_styles(default_out: Path) -> None:
    keio = read_tsv(default_out / "keio_hc" / "participants.tsv")
    assert "sub-K07" in set(keio["participant_id"])
    assert keio["age"].str.fullmatch(r"\d+y").all()
    assert set(keio["sex"]) <= {"F", "M"}
    obs_bytes = (default_out / "ycu_obs" / "participants.tsv").read_bytes()
    assert not obs_bytes.endswith(b"\n") and b"\r" not in obs_bytes
    obs = read_tsv(default_out / "ycu_obs" / "participants.tsv")
    assert "sub-hc7" in set(obs["participant_id"])
    assert obs["age"].isna().sum() == 2
    assert obs["age"].dropna().str.fullmatch(r"\d+\.0").all()
    assert {s.lower() for s in obs["sex"]} == {"female", "male"}
    assert len(set(obs["sex"])) > 2  # mixed case
    assert (default_out / "ycu_rct" / "participants.tsv").read_bytes().endswith(b"\n")
    sessions = read_tsv(default_out / "ycu_rct" / "sub-YCU001" / "sub-YCU001_sessions.tsv")
    assert list(sessions["session_id"]) == ["ses-pre", "ses-post"]
    times = pd.to_datetime(sessions["acq_time"], format="%Y-%m-%dT%H:%M:%S")
    assert 15 <= (times.iloc[1] - times.iloc[0]).days <= 19
    keio_sessions = read_tsv(default_out / "keio_hc" / "sub-K07" / "sub-K07_sessions.tsv")
    assert list(keio_sessions["session_id"]) == ["ses-01"]


def test_hamd_site_scores_and_sidecar(default_out: Path) -> None:
    scores = read_tsv(default_out / "keio_hc" / "phenotype" / "hamd17.tsv")
    assert list(scores.columns) == ["participant_id", "session_id", "hamd17_total"]
    values = scores["hamd17_total"].astype(int)
    assert values.between(0, 52).all()
    sidecar = json.loads((default_out / "keio_hc" / "phenotype" / "hamd17.json").read_text())
    assert sidecar["MeasurementToolMetadata"]["Description"] == "HAM-D-17"
    assert "hamd17_total" in sidecar
    madrs = json.loads((default_out / "ycu_rct" / "phenotype" / "madrs.json").read_text())
    assert madrs["MeasurementToolMetadata"]["Description"] == "MADRS"


def test_default_rct_reproduces_published_t(default_out: Path) -> None:
    parts = madrs_change(default_out / "ycu_rct", "phenotype/madrs.tsv", "total")
    ket = parts.loc[parts["arm"] == "KET", "change"]
    pbo = parts.loc[parts["arm"] == "PBO", "change"]
    result = stats.ttest_ind(ket, pbo)  # pooled Student t, df = 32
    assert abs(abs(result.statistic) - 2.02) <= 0.3
    assert abs(ket.mean() - -8.1) < 0.6 and abs(pbo.mean() - -2.5) < 0.6


def _entries(out: Path) -> dict[tuple[str, str | None], float]:
    """The clinical truths; the PET part's entries are tested in test_synth_pet.py."""
    truth = json.loads((out / "ground_truth.json").read_text())
    analyses = {e["analysis"] for e in truth["entries"]}
    assert "clinical.madrs_change" in analyses
    known = ("clinical.", "pet.", "ieeg.", "behaviour.", "mouse.", "cross_species.")
    assert all(a.startswith(known) for a in analyses), analyses
    return {
        (e["term"], e["arm"]): e["value"]
        for e in truth["entries"]
        if e["analysis"] == "clinical.madrs_change"
    }


def _simulated_rates(
    baseline: tuple[float, float], change: tuple[float, float], hamd: bool = False, n: int = 400_000
) -> tuple[float, float]:
    """Independent Monte Carlo of the generative model: response and remission (<= 10)."""
    rng = np.random.default_rng(12345)
    b = np.clip(np.round(rng.normal(*baseline, n)), 0, 60)
    p = np.clip(np.round(b + rng.normal(*change, n)), 0, 60)
    if hamd:  # site writes integer HAM-D; analysis converts back to MADRS equivalents
        b, p = (
            np.minimum(
                np.interp(np.clip(np.round(np.interp(x, MADRS, HAMD)), 0, 52), HAMD, MADRS), 60
            )
            for x in (b, p)
        )
    return float(np.mean((b > 0) & (b - p >= 0.5 * b))), float(np.mean(p <= 10))


def test_default_ground_truth(default_out: Path) -> None:
    truth = json.loads((default_out / "ground_truth.json").read_text())
    assert truth["scenario"] == "default" and isinstance(truth["seed"], int)
    values = _entries(default_out)
    assert set(values) == {
        ("change", "ketamine"),
        ("change", "placebo"),
        ("arm_difference", None),
        ("response_rate", "ketamine"),
        ("response_rate", "placebo"),
        ("remission_rate", "ketamine"),
        ("remission_rate", "placebo"),
        ("response_difference", None),
        ("remission_difference", None),
    }
    assert values[("change", "ketamine")] == pytest.approx(-8.1)
    assert values[("change", "placebo")] == pytest.approx(-2.5)
    assert values[("arm_difference", None)] == pytest.approx(-5.6)
    for arm, change in (("ketamine", (-8.1, 10.0)), ("placebo", (-2.5, 5.2))):
        response, remission = _simulated_rates((33, 5), change)
        assert values[("response_rate", arm)] == pytest.approx(response, abs=0.004)
        assert values[("remission_rate", arm)] == pytest.approx(remission, abs=0.004)
    assert values[("response_difference", None)] == pytest.approx(
        values[("response_rate", "ketamine")] - values[("response_rate", "placebo")]
    )
    assert values[("remission_difference", None)] > 0


def test_null_ground_truth(null_out: Path) -> None:
    values = _entries(null_out)
    assert values[("change", "ketamine")] == values[("change", "placebo")] == -3.0
    assert values[("arm_difference", None)] == 0.0
    assert values[("response_difference", None)] == 0.0
    assert values[("remission_difference", None)] == 0.0
    response, remission = _simulated_rates((33, 5), (-3, 6))
    assert values[("response_rate", "ketamine")] == pytest.approx(response, abs=0.004)
    assert values[("remission_rate", "placebo")] == pytest.approx(remission, abs=0.004)
    rct = read_tsv(null_out / "ycu_rct" / "participants.tsv")
    assert rct["arm"].value_counts().to_dict() == {"KET": 60, "PBO": 60}


def test_truth_of_a_hamd_trial_is_in_madrs_equivalents(tmp_path: Path) -> None:
    def hamd_rct(d: dict[str, Any]) -> None:
        d["sites"][0].update(scale="hamd17", score_file="phenotype/hamd.tsv")

    out = tmp_path / "out"
    generate(write_variant(tmp_path, SMALL, hamd_rct), out)
    values = _entries(out)
    assert values[("change", "ketamine")] == -12.0
    response, remission = _simulated_rates((33, 5), (-12, 6), hamd=True)
    assert values[("response_rate", "ketamine")] == pytest.approx(response, abs=0.004)
    assert values[("remission_rate", "ketamine")] == pytest.approx(remission, abs=0.004)
    scores = read_tsv(out / "ycu_rct" / "phenotype" / "hamd.tsv")["total"].astype(int)
    assert scores.between(0, 52).all() and scores.max() < 40  # HAM-D, not MADRS, numbers


def test_missing_post_scores_are_written_as_na(tmp_path: Path) -> None:
    path = write_variant(
        tmp_path, SMALL, lambda d: d["clinical"].update(missing_post_fraction=0.25)
    )
    generate(path, tmp_path / "out")
    scores = read_tsv(tmp_path / "out" / "ycu_rct" / "phenotype" / "madrs.tsv")
    post = scores[scores["session_id"] == "ses-post"]
    assert post["total"].isna().sum() == 6 and len(post) == 24
    assert scores.loc[scores["session_id"] == "ses-pre", "total"].notna().all()


# --------------------------------------------------------------------------- site configs


def test_site_configs_match_what_was_written(default_out: Path) -> None:
    configs = site_configs(load_scenario(DEFAULT), "git@registry:consortium", "v1")
    by_id = {c["id"]: c for c in configs}
    assert list(by_id)[:3] == ["ycu_rct", "keio_hc", "ycu_obs"]
    # the config shipped in config/config.yaml reads exactly what the default scenario writes
    shipped = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())["sites"]
    assert [s["id"] for s in shipped] == list(by_id)
    for site in shipped:
        expected = {k: v for k, v in by_id[site["id"]].items() if k not in ("path", "registry")}
        got = {k: v for k, v in site.items() if k not in ("path", "registry")}
        assert got == expected, site["id"]
    assert by_id["lab_dlc_mice"]["reader"] == {
        "conditions": {"ses-saline": "saline", "ses-ketamine": "ketamine"},
        "format": "dlc",
        "frame_rate_hz": 40,
    }
    assert by_id["site_a_ieeg"]["reader"]["eyelid"] is True
    configs = [c for c in configs if c["modality"] == "pet"]
    rct = by_id["ycu_rct"]
    assert rct == {
        "id": "ycu_rct",
        "modality": "pet",
        "species": "human",
        "trial": "jRCTs031210124",
        "registry": "git@registry:consortium",
        "path": "datasets/ycu_rct",
        "revision": "v1",
        "reader": {
            "visits": {"ses-pre": "baseline", "ses-post": "post"},
            "scores": "phenotype/madrs.tsv",
            "score_column": "total",
            "sex_codes": {"1": "male", "2": "female"},
        },
    }
    assert by_id["keio_hc"]["reader"] == {
        "visits": {"ses-01": "baseline"},
        "scores": "phenotype/hamd17.tsv",
        "score_column": "hamd17_total",
    }
    assert "sex_codes" not in by_id["ycu_obs"]["reader"]
    for config in configs:
        site_dir = default_out / config["id"]
        reader = config["reader"]
        scores = read_tsv(site_dir / reader["scores"])
        assert reader["score_column"] in scores.columns
        assert set(scores["session_id"]) <= set(reader["visits"])
