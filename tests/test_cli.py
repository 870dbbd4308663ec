"""The ketamap command and the workflow adapter: one clear message and a non-zero exit on bad input."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from ketamap import ids
from ketamap.adapter import run_here
from ketamap.cli import main
from ketamap.errors import ConfigError, SiteDataError


def test_synth_then_registry_then_site_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "synth",
                "--scenario",
                str(REPO / "config/scenarios/small.yaml"),
                "--out",
                str(tmp_path / "sites"),
            ]
        )
        == 0
    )
    assert (tmp_path / "sites" / "ground_truth.json").is_file()
    assert (
        main(
            [
                "registry",
                "--sites",
                str(tmp_path / "sites"),
                "--out",
                str(tmp_path / "reg"),
                "--remote",
                str(tmp_path / "remote"),
                "--release",
                "v1",
            ]
        )
        == 0
    )
    assert (tmp_path / "reg" / "datasets" / "ycu_rct.dvc").is_file()
    capsys.readouterr()
    assert main(["site-config", "--scenario", str(REPO / "config/scenarios/small.yaml")]) == 0
    sites = yaml.safe_load(capsys.readouterr().out)["sites"]
    assert [s["id"] for s in sites] == ["ycu_rct", "keio_hc", "ycu_obs"]


def test_cli_errors_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    scenario = yaml.safe_load((REPO / "config/scenarios/small.yaml").read_text())
    scenario["sede"] = 1
    bad.write_text(yaml.safe_dump(scenario))
    assert main(["synth", "--scenario", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ketamap synth: error:") and "sede" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_registry_of_an_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert (
        main(
            [
                "registry",
                "--sites",
                str(tmp_path / "empty"),
                "--out",
                str(tmp_path / "r"),
                "--remote",
                str(tmp_path / "x"),
                "--release",
                "v1",
            ]
        )
        == 2
    )
    assert "no site datasets found" in capsys.readouterr().err


def test_recovery_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    truth = tmp_path / "truth.json"
    truth.write_text(
        json.dumps(
            {
                "entries": [
                    {
                        "analysis": "clinical.madrs_change",
                        "term": "arm_difference",
                        "arm": None,
                        "value": -5.0,
                        "unit": "MADRS points",
                    }
                ]
            }
        )
    )
    assert main(["recovery", "--truth", str(truth), "--results", str(tmp_path / "none")]) == 2
    assert "pooled results folder missing" in capsys.readouterr().err
    # before a run there is no ground truth yet: one message, no traceback
    missing = tmp_path / "sites" / "ground_truth.json"
    assert main(["recovery", "--truth", str(missing), "--results", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "ground truth file missing" in err and "Traceback" not in err
    (tmp_path / "pooled").mkdir()
    with pytest.raises(
        SystemExit
    ) as exit_info:  # the analysis was not run: reported, not recovered
        main(["recovery", "--truth", str(truth), "--results", str(tmp_path / "pooled")])
    assert exit_info.value.code == 1
    assert "1 of 1 truths not recovered" in capsys.readouterr().err


def test_adapter_turns_project_errors_into_one_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "job.log"

    def fails() -> None:
        raise SiteDataError(
            "missing required column", site="s", file="participants.tsv", field="sex"
        )

    with pytest.raises(SystemExit) as exit_info:
        run_here(fails, {}, log_file=str(log), limits=None, startup=0.0)
    assert exit_info.value.code == 1
    message = "site 's', file 'participants.tsv', field 'sex': missing required column"
    assert message in log.read_text() and message in capsys.readouterr().err
    assert "Traceback" not in log.read_text()
    assert run_here(lambda x: x + 1, {"x": 1}, log_file=str(log), limits=None, startup=0.0) == 2
    # A step that succeeds logs its compute time and its process's start-up time.
    line = log.read_text().strip().splitlines()[-1]
    assert re.fullmatch(
        r"INFO ketamap: step test_cli\.\S+<lambda> compute \d+\.\d{3} s, start-up \d+\.\d{3} s",
        line,
    ), line
    for handler in list(logging.getLogger("ketamap").handlers):
        handler.close()
        logging.getLogger("ketamap").removeHandler(handler)


def test_adapter_never_leaves_an_unexpected_error_out_of_the_job_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bug (or an input nothing checks yet) still gives a non-empty job log with the traceback,
    and one line on the console naming the log."""
    log = tmp_path / "job.log"

    def bug() -> None:
        raise TypeError("can't convert complex to float")

    with pytest.raises(SystemExit) as exit_info:
        run_here(bug, {}, log_file=str(log), limits={"tsv_mb": 1}, startup=0.0)
    assert exit_info.value.code == 1
    text = log.read_text()
    assert "Traceback" in text and "TypeError: can't convert complex to float" in text
    err = capsys.readouterr().err
    assert "unexpected TypeError: can't convert complex to float" in err
    assert str(log) in err and "Traceback" not in err
    from ketamap import limits

    assert limits.limit_mb("tsv") == 1  # the job's config limits were applied
    limits.configure(None)
    for handler in list(logging.getLogger("ketamap").handlers):
        handler.close()
        logging.getLogger("ketamap").removeHandler(handler)


def test_key_comes_from_the_environment_first(monkeypatch: pytest.MonkeyPatch) -> None:
    config = {"pseudonymization": {"key_env": "KM_TEST_KEY", "demo_key": "demo"}}
    assert ids.load_key(config) == b"demo"
    monkeypatch.setenv("KM_TEST_KEY", "secret")
    assert ids.load_key(config) == b"secret"
    fingerprint = ids.key_fingerprint(config)
    assert len(fingerprint) == 16 and "secret" not in fingerprint
    monkeypatch.delenv("KM_TEST_KEY")
    with pytest.raises(
        ConfigError,
        match=r"field 'pseudonymization': no pseudonymization key: environment variable KM_OTHER",
    ):
        ids.load_key({"pseudonymization": {"key_env": "KM_OTHER"}})


def _properties(node: object, path: str = "") -> list[tuple[str, dict]]:
    """Every named property anywhere in a JSON Schema, $defs and nested schemas included."""
    found: list[tuple[str, dict]] = []
    if isinstance(node, dict):
        for name, sub in (node.get("properties") or {}).items():
            found.append((f"{path}.{name}", sub))
        for key, sub in node.items():
            found += _properties(sub, f"{path}/{key}")
    elif isinstance(node, list):
        for i, sub in enumerate(node):
            found += _properties(sub, f"{path}[{i}]")
    return found


@pytest.mark.parametrize("schema", ["config.schema.yaml", "scenario.schema.yaml"])
def test_every_schema_property_is_described(schema: str) -> None:
    props = _properties(yaml.safe_load((REPO / "schemas" / schema).read_text()))
    assert len(props) > 10
    undescribed = [p for p, sub in props if not str(sub.get("description", "")).strip()]
    assert not undescribed
