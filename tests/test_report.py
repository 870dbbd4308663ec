"""The report: every figure and pooled result of a run, with captions that state its n and verdict.

Unit tests of ``ketamap.report`` on real analysis results, the caption templates rendered the way
Snakemake renders them (Jinja, then docutils, failing on any reStructuredText warning) for every
analysis and figure, and the report of the session's small-scenario run made with `make report`
and opened in a real browser (Debian's chromium, headless).
"""

from __future__ import annotations

import copy
import html
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import jinja2
import numpy as np
import pandas as pd
import pytest
import yaml
from docutils.core import publish_parts
from PIL import Image

import headless_browser
from conftest import REPO, venv_bin
from ketamap import schemas
from ketamap.config import validate_config
from ketamap.pooled import analysis_options, result_frame
from ketamap.pooled.pet import analyze_baseline, analyze_response_prediction, check_design
from ketamap.report import analysis_category, design_verdict, run_labels, run_summary
from test_pooled_pet import REF, _responders, simulate

CONFIG = yaml.safe_load((REPO / "config/config.yaml").read_text())


def test_every_design_check_note_states_its_verdict() -> None:
    """The verdict is read from the rows' note: each of check_design's notes must map to it."""
    layouts = {
        "single batch": (["A", "A", "A"], ["trd", "hc", "hc"]),
        "balanced": (["A", "A", "B", "B"], ["trd", "hc", "trd", "hc"]),
        "partially confounded": (["A", "A", "B", "B"], ["trd", "hc", "hc", "hc"]),
        "fully confounded": (["A", "A", "B", "B"], ["trd", "trd", "hc", "hc"]),
    }
    for verdict, (batch, group) in layouts.items():
        check = check_design(pd.Series(batch), pd.Series(group))
        assert check.verdict == verdict
        assert design_verdict(pd.Series([None, check.note])) == verdict, check.note
    assert design_verdict(pd.Series(["Pearson r = 0.1", None])) is None


def test_run_summary_gives_the_design_checks_verdict_and_n() -> None:
    subjects, _, regional = simulate(3, n_arm=10, n_hc=(0, 10), trd_scanner="S1")
    confounded = analyze_baseline(regional, subjects, reference_region=REF)
    assert run_summary(confounded) == {"n": "30", "verdict": "fully confounded; not estimated"}
    subjects, _, regional = simulate(2, n_arm=10, n_hc=(10, 10))
    partial = analyze_baseline(regional, subjects, reference_region=REF)
    assert run_summary(partial) == {
        "n": "30",  # the 20 patients and 10 controls of the shared scanner; S2's are left out
        "verdict": "partially confounded; all 7 rows estimated",
    }


def test_run_summary_says_why_nothing_was_estimated() -> None:
    subjects, scores, regional = simulate(5, n_arm=10, n_hc=(3, 3))
    ketamine = subjects.loc[subjects["arm"] == "ketamine", "subject_id"]
    scores = _responders(scores, subjects, ketamine.head(2))  # 2 responders: fewer than 4
    result = analyze_response_prediction(
        regional, subjects, scores, regions=["habenula", "acc"], reference_region=REF
    )
    assert run_summary(result) == {
        "n": "10",
        "verdict": "not estimated: too few responders or non-responders",
    }
    clinical = pd.DataFrame(
        {"n": [17, 17, 34], "estimate": [1.0, np.nan, 2.0], "method": ["t", None, "t"]}
    ).assign(note=None)
    assert run_summary(clinical) == {
        "n": "17-34",
        "verdict": "2 of 3 rows estimated, the others not",
    }


def test_labels_come_from_the_result_and_carry_no_wildcard_braces(tmp_path: Path) -> None:
    result = result_frame(
        [
            dict(
                analysis="pet.x",
                term="slope",
                region=region,
                estimate=0.1,
                ci_low=0.0,
                ci_high=0.2,
                p_value=0.04,
                n=12,
                unit="SUVR",
                method="OLS",
                note="{weird} note",
            )
            for region in ("acc", "insula")
        ]
    )
    path = tmp_path / "pet.x.parquet"
    schemas.write_table(result, "pooled_result", path)
    assert run_labels("forest {plot}", path) == {
        "result": "forest (plot)",
        "n": "12",
        "verdict": "all 2 rows estimated",
    }
    assert analysis_category("cross_species.timing_signature") == "Cross-species"
    assert analysis_category("mouse.reward_seeking_after_train") == "Behaviour"


# Every caption branch: (caption file, rule, wildcards, id the caption must name, params).
FILLED = validate_config(copy.deepcopy(CONFIG))


def _pooled(caption: str, rule: str, analysis: str) -> tuple:
    return (caption, rule, {"analysis": analysis}, analysis, analysis_options(FILLED, analysis))


CAPTIONS = [
    ("clinical.rst", "pooled_clinical", {}, "clinical.madrs_change", {}),
    *[
        _pooled("pet.rst", "pooled_pet", f"pet.{name}")
        for name in (
            "baseline_trd_vs_hc",
            "ketamine_x_time",
            "change_vs_improvement",
            "response_prediction",
        )
    ],
    (
        "pet.rst",
        "figure_change_scatter",
        {"figure": "pet.change_vs_improvement.scatter"},
        "pet.change_vs_improvement",
        {},
    ),
    ("pet.rst", "figure_pet_batches", {"figure": "pet.batches"}, "pet.batches", {}),
    *[
        _pooled("ieeg.rst", "pooled_ieeg", f"ieeg.{name}")
        for name in ("slow_phase_duration", "fast_phase_latency", "synchrony")
    ],
    (
        "ieeg.rst",
        "figure_ieeg_timecourses",
        {"figure": "ieeg.timecourses"},
        "ieeg.timecourses",
        {},
    ),
    *[
        _pooled("behaviour.rst", "pooled_behaviour", a)
        for a in (
            "behaviour.reflex_blink",
            "behaviour.sustained_closure",
            "mouse.reward_seeking_after_train",
            "cross_species.timing_signature",
        )
    ],
    *[
        (
            "behaviour.rst",
            "figure_behaviour",
            {"figure": f"behaviour.{kind}"},
            f"behaviour.{kind}",
            {},
        )
        for kind in ("eyelid", "reward", "cross_species")
    ],
]


def render_caption(caption: str, snakemake: SimpleNamespace, files: list) -> str:
    """A caption as Snakemake renders it (Jinja with its options, then docutils to HTML), but
    failing on any reStructuredText warning instead of printing it into the report."""
    text = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(caption)
    rst = text.render(snakemake=snakemake, categories={}, files=files)
    return publish_parts(
        rst,
        writer="html",
        settings_overrides={"halt_level": 2, "report_level": 2, "warning_stream": False},
    )["body"]


@pytest.mark.parametrize(
    ("caption", "rule", "wildcards", "names", "options"),
    CAPTIONS,
    ids=[f"{c[1]}-{c[3]}" for c in CAPTIONS],
)
def test_caption_describes_its_analysis_and_prints_the_runs_n_and_verdict(
    caption: str, rule: str, wildcards: dict, names: str, options: dict
) -> None:
    output = f"results/figures/{names}.png"
    labels = {"result": "forest plot", "n": "12-24", "verdict": "fully confounded; not estimated"}
    other = SimpleNamespace(path=Path("results/figures/other.png"), labels={"n": "99"})
    snakemake = SimpleNamespace(
        rule=rule,
        wildcards=SimpleNamespace(**wildcards),
        params=SimpleNamespace(options=options),
        output=[output],
        config=CONFIG,
    )
    text = (REPO / "workflow/report" / caption).read_text()
    body = render_caption(
        text, snakemake, [other, SimpleNamespace(path=Path(output), labels=labels)]
    )
    assert body.count(f"<strong>{names}</strong>") == 1, body  # its own branch, only that one
    assert "This run:</strong> n = 12-24; verdict: fully confounded; not estimated." in body, body
    assert not re.search(r"\{\{|\{%|``|\*\*", body), body  # no markup left unrendered
    # without a verdict (a descriptive figure), the run line gives the n alone
    labels.pop("verdict")
    body = render_caption(text, snakemake, [SimpleNamespace(path=Path(output), labels=labels)])
    assert "This run:</strong> n = 12-24.</p>" in body, body


@dataclass(frozen=True, order=True)
class Category:
    name: str


def test_global_description_lists_the_categories_and_sites() -> None:
    text = (REPO / "workflow/report/workflow.rst").read_text()
    categories = {Category("PET"): {}, Category("Clinical"): {}}
    rst = (
        jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
        .from_string(text + "\n.. _PET: #pet\n.. _Clinical: #clinical\n")
        .render(snakemake=SimpleNamespace(config=CONFIG), categories=categories, files=[])
    )
    parts = publish_parts(
        rst, writer="html", settings_overrides={"halt_level": 2, "warning_stream": False}
    )
    for site in CONFIG["sites"]:
        assert f'<tt class="docutils literal">{site["id"]}</tt>' in parts["html_body"]
    assert CONFIG["pseudonymization"]["demo_key"] not in parts["html_body"]


def _fresh_shell() -> dict[str, str]:
    """A new terminal's environment: no virtualenv activated, none of its bin on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if Path(p) != venv_bin())
    env.pop("KETAMAP_PSEUDONYM_KEY", None)
    return env


def embedded(report: str, name: str) -> dict:
    """One of the JSON objects the report's app reads (``<script id="results">var results = ...``)."""
    match = re.search(rf'<script id="{name}">\s*var {name} = (.*?);\s*</script>', report, re.S)
    assert match, f"no script {name!r} in the report"
    return json.loads(match.group(1))


def page_text(dom: str) -> str:
    """The rendered DOM's visible text, whitespace collapsed (embedded data URIs dropped)."""
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def _gray(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=float)


def _ink_box(pixels: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box (left, top, right, bottom) of the non-white pixels."""
    rows, cols = np.nonzero(pixels < 245)
    assert len(rows), "nothing but white"
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


def shown_like(screenshot: Path, left: int, figure: Path) -> float:
    """Correlation of what the browser drew right of ``left`` with the figure file, both cut to
    their ink and the file scaled to the drawn size (the report fits it to the window)."""
    with Image.open(screenshot) as shot:
        drawn = _gray(shot)[:, left:]
    x0, y0, x1, y1 = _ink_box(drawn)
    drawn = drawn[y0:y1, x0:x1]
    with Image.open(figure) as image:
        cut = image.crop(_ink_box(_gray(image)))
    source = _gray(cut.resize((x1 - x0, y1 - y0), Image.Resampling.LANCZOS))
    return float(np.corrcoef(drawn.ravel(), source.ravel())[0, 1])


@pytest.mark.e2e
def test_report_renders_every_figure_with_the_runs_n_and_verdict(
    pipeline: dict, tmp_path: Path
) -> None:
    """`make report` as the README has it, after the run; then each figure opened in chromium:
    the image decoded at its size and drawn, its caption in the page with the run's n and
    verdict, read from its pooled result."""
    try:
        chromium = headless_browser.install()
    except headless_browser.BrowserUnavailableError as exc:
        pytest.skip(str(exc))
    project = pipeline["project"]
    # The project is a copy of the workflow; `make` needs the Makefile and what .venv is built from.
    plugin = "packages/snakemake-storage-plugin-dvc/pyproject.toml"
    for name in ("Makefile", "pyproject.toml", "requirements.lock", "requirements-uv.lock", plugin):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, project / name)
    stamp = subprocess.run(
        ["make", "-q", ".venv/.ketamap-installed"], cwd=project, capture_output=True, check=False
    )
    assert stamp.returncode == 0, "the checkout's .venv is older than its lock file: make setup"
    made = subprocess.run(
        ["make", "report"], cwd=project, env=_fresh_shell(), capture_output=True, text=True
    )
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-5000:]
    report = project / "results/report.html"
    text = report.read_text(encoding="utf-8")
    assert not re.search(r"<(script|img)\b[^>]*\bsrc=\"https?:|<link\b[^>]*href=\"https?:", text)
    results = embedded(text, "results")
    figures = sorted(
        p.relative_to(project).as_posix() for p in project.glob("results/figures/*.png")
    )
    pooled = sorted(
        p.relative_to(project).as_posix() for p in project.glob("results/pooled/*.parquet")
    )
    assert len(figures) == 6 and len(pooled) == 5, (figures, pooled)
    assert set(figures) | set(pooled) == set(results), sorted(results)
    categories = embedded(text, "categories")
    assert set(categories) == {"Clinical", "PET"}
    assert set(categories["PET"]) == {
        f"pet.{n}"
        for n in (
            "baseline_trd_vs_hc",
            "ketamine_x_time",
            "change_vs_improvement",
            "response_prediction",
        )
    }

    # What each item's run line must say, read here from the results themselves.
    source = {
        **{p: p for p in pooled},
        **{f"results/figures/{Path(p).stem}.png": p for p in pooled},
        "results/figures/pet.batches.png": "results/pooled/pet.baseline_trd_vs_hc.parquet",
        "results/figures/pet.change_vs_improvement.scatter.png": (
            "results/pooled/pet.change_vs_improvement.parquet"
        ),
    }
    expected = {}
    for item in results:
        rows = schemas.read_table(project / source[item], "pooled_result")
        n = rows["n"].astype(int)
        count = str(n.iloc[0]) if n.nunique() == 1 else f"{n.min()}-{n.max()}"
        verdict = run_summary(rows)["verdict"]
        if rows["estimate"].notna().all():  # rows that all hold an estimate say so
            assert verdict.endswith(
                f"all {len(rows)} rows estimated" if len(rows) > 1 else "estimated"
            )
        expected[item] = f"This run: n = {count}; verdict: {verdict}."
        labels = results[item]["labels"]
        assert labels.pop("result") and labels == {"n": count, "verdict": verdict}, item
        assert expected[item] in page_text(results[item]["caption"]), item
        assert "System Message" not in results[item]["caption"], item
    # The small scenario's baseline design: controls on a scanner of their own (test_workflow).
    baseline = expected["results/figures/pet.baseline_trd_vs_hc.png"]
    assert baseline.endswith("verdict: partially confounded; all 19 rows estimated.")

    page = headless_browser.navigable_copy(report, tmp_path / "report.html")
    for figure in figures:
        with Image.open(project / figure) as image:
            width, height = image.size
        # a window tall enough for the whole figure (the report centres it and lets it overflow)
        window = (1600, max(1000, height + 500))
        view = headless_browser.show(chromium, page, figure, tmp_path / Path(figure).stem, window)
        body = re.search(r"<body[^>]*>", view.dom)
        marks = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group() if body else ""))
        assert "error" not in marks, (figure, marks["error"])
        assert marks.get("figure") == f"{width}x{height}", (figure, marks)
        similarity = shown_like(view.screenshot, int(marks["nav-right"]), project / figure)
        assert similarity > 0.8, (figure, similarity)
        shown = page_text(view.dom)
        assert figure in shown  # the breadcrumb names the result
        analysis = Path(source[figure]).stem
        assert analysis_category(analysis) in categories
        assert expected[figure] in shown, shown[:3000]
        caption = page_text(results[figure]["caption"])
        assert caption in shown, (figure, caption)
