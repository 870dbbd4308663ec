"""Pooled analyses across sites and species, each in the one shared result shape (table
``pooled_result``), and the registry the workflow's rules are made from.

:data:`ANALYSES` is the one place an analysis is named: the workflow's rule list, wildcards and
DVC outputs, the params each analysis gets (:mod:`ketamap.config`), and the dispatch below all
come from it. An entry names its module and step function as strings, so planning the workflow
imports no statistics and each rule's code input holds its own module (:mod:`ketamap.codedeps`).
A step takes the tables it reads and its options and returns an :class:`Outcome`.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ketamap import integrity

log = logging.getLogger(__name__)

RESULT_TABLE = "pooled_result"

# The measurement options each iEEG / eyelid analysis states in every row's method column.
_IEEG_MEASURED = ("ieeg.threshold_z", "ieeg.min_duration_s", "ieeg.band_hz", "ieeg.reference")
_EYELID_MEASURED = (
    "behaviour.reflex_window_s",
    "behaviour.sustained_window_s",
    "behaviour.likelihood_cutoff",
)


@dataclass(frozen=True)
class Analysis:
    """One pooled analysis.

    ``tables``: the consortium tables it reads; ``optional``: tables it reads when a group of
    sites (:data:`ketamap.harmonize.SITE_GROUPS`) is there. ``needs``: groups that must all have
    sites for the analysis to run. ``reads``: config keys (dotted) it reads besides its own
    ``analyses.<name>`` section: a shared definition or thresholds it states in ``method``.
    ``figure``/``metrics``: it draws ``results/figures/<name>.png`` / writes
    ``results/metrics/<module>.json``; ``shows``: what that figure shows, for the report.
    """

    name: str
    module: str
    function: str
    tables: tuple[str, ...]
    needs: tuple[str, ...]
    reads: tuple[str, ...] = ()
    optional: dict[str, str] = field(default_factory=dict)
    figure: bool = True
    metrics: bool = False
    shows: str = "forest plot"  # what its figure shows (the report's label)

    @property
    def rule(self) -> str:
        """The workflow rule that runs it: one per pooled module (``pooled_pet``, ...)."""
        return "pooled_" + self.module.rsplit(".", 1)[-1]


_PET_TABLES = ("pet_regional", "subjects", "clinical_scores")
_IEEG_TABLES = ("ieeg_responses", "ieeg_synchrony")
_EYELID_TABLES = ("behaviour_puffs", "behaviour_timecourses", "reward_seeking")
_PAIRED = "forest plot and per-subject values"

ANALYSES: dict[str, Analysis] = {
    a.name: a
    for a in (
        Analysis(
            "clinical.madrs_change",
            "ketamap.pooled.clinical",
            "step_madrs_change",
            ("subjects", "clinical_scores"),
            needs=("scores",),
            reads=("clinical.response_fraction", "clinical.remission_threshold"),
            figure=False,
            metrics=True,
        ),
        Analysis(
            "pet.baseline_trd_vs_hc", "ketamap.pooled.pet", "step_baseline", _PET_TABLES, ("pet",)
        ),
        Analysis(
            "pet.ketamine_x_time",
            "ketamap.pooled.pet",
            "step_ketamine_x_time",
            _PET_TABLES,
            ("pet",),
        ),
        Analysis(
            "pet.change_vs_improvement",
            "ketamap.pooled.pet",
            "step_change_vs_improvement",
            _PET_TABLES,
            ("pet",),
        ),
        Analysis(
            "pet.response_prediction",
            "ketamap.pooled.pet",
            "step_response_prediction",
            _PET_TABLES,
            ("pet",),
            reads=("clinical.response_fraction",),
        ),
        Analysis(
            "ieeg.slow_phase_duration",
            "ketamap.pooled.ieeg",
            "step_slow_phase_duration",
            _IEEG_TABLES,
            ("ieeg",),
            reads=_IEEG_MEASURED,
            shows=_PAIRED,
        ),
        Analysis(
            "ieeg.fast_phase_latency",
            "ketamap.pooled.ieeg",
            "step_fast_phase_latency",
            _IEEG_TABLES,
            ("ieeg",),
            reads=_IEEG_MEASURED,
            shows=_PAIRED,
        ),
        Analysis(
            "ieeg.synchrony",
            "ketamap.pooled.ieeg",
            "step_synchrony",
            _IEEG_TABLES,
            ("ieeg",),
            reads=_IEEG_MEASURED,
            shows=_PAIRED,
        ),
        Analysis(
            "behaviour.reflex_blink",
            "ketamap.pooled.behaviour",
            "step_reflex_blink",
            _EYELID_TABLES,
            ("behaviour",),
            reads=_EYELID_MEASURED,
        ),
        Analysis(
            "behaviour.sustained_closure",
            "ketamap.pooled.behaviour",
            "step_sustained_closure",
            _EYELID_TABLES,
            ("behaviour",),
            reads=_EYELID_MEASURED,
        ),
        Analysis(
            "mouse.reward_seeking_after_train",
            "ketamap.pooled.behaviour",
            "step_reward_seeking",
            _EYELID_TABLES,
            ("behaviour", "mouse"),
        ),
        Analysis(
            "cross_species.timing_signature",
            "ketamap.pooled.behaviour",
            "step_timing_signature",
            _EYELID_TABLES,
            ("behaviour", "mouse", "eyelid"),
            reads=(*_EYELID_MEASURED, "seed"),
            optional={"ieeg_responses": "ieeg"},
        ),
    )
}


@dataclass(frozen=True)
class Figure:
    """A figure drawn from tables and results rather than by one analysis (``results/figures/
    <name>.png``); ``inputs`` maps the step's argument names to consortium tables (``table:<t>``)
    or pooled results (``pooled:<analysis>``); ``optional`` are read when a site group has sites.

    ``rule``: the workflow rule drawing it (figures of one rule share it as a wildcard). For the
    report: ``about`` the analysis it belongs to (its subcategory), what it ``shows``, and the
    input whose n the report states (``n_from``, an argument name of ``inputs``).
    """

    name: str
    module: str
    function: str
    inputs: dict[str, str]
    needs: tuple[str, ...]
    rule: str
    about: str
    shows: str
    n_from: str
    optional: dict[str, tuple[str, str]] = field(default_factory=dict)


FIGURES: dict[str, Figure] = {
    f.name: f
    for f in (
        Figure(
            "pet.change_vs_improvement.scatter",
            "ketamap.pooled.pet",
            "figure_change_scatter",
            {
                "result": "pooled:pet.change_vs_improvement",
                "regional": "table:pet_regional",
                "subjects": "table:subjects",
                "scores": "table:clinical_scores",
            },
            ("pet",),
            rule="figure_change_scatter",
            about="pet.change_vs_improvement",
            shows="scatter of change vs improvement",
            n_from="result",
        ),
        Figure(
            "pet.batches",
            "ketamap.pooled.pet",
            "figure_batches",
            {"regional": "table:pet_regional", "subjects": "table:subjects"},
            ("pet",),
            rule="figure_pet_batches",
            about="pet.baseline_trd_vs_hc",
            shows="SUVR by acquisition batch",
            n_from="pooled:pet.baseline_trd_vs_hc",
        ),
        Figure(
            "ieeg.timecourses",
            "ketamap.pooled.ieeg",
            "figure_timecourses",
            {"timecourses": "table:ieeg_timecourses"},
            ("ieeg",),
            rule="figure_ieeg_timecourses",
            about="ieeg.timecourses",
            shows="HFB time courses",
            n_from="timecourses",
        ),
        Figure(
            "behaviour.eyelid",
            "ketamap.pooled.behaviour",
            "figure_eyelid",
            {"timecourses": "table:behaviour_timecourses"},
            ("behaviour",),
            rule="figure_behaviour",
            about="behaviour.eyelid",
            shows="eyelid closure by species and drug",
            n_from="timecourses",
        ),
        Figure(
            "behaviour.reward",
            "ketamap.pooled.behaviour",
            "figure_reward",
            {"cues": "table:reward_cues"},
            ("behaviour", "mouse"),
            rule="figure_behaviour",
            about="mouse.reward_seeking_after_train",
            shows="reward seeking around the train",
            n_from="cues",
        ),
        Figure(
            "behaviour.cross_species",
            "ketamap.pooled.behaviour",
            "figure_cross_species",
            {
                "timecourses": "table:behaviour_timecourses",
                "signature": "pooled:cross_species.timing_signature",
            },
            ("behaviour", "mouse", "eyelid"),
            rule="figure_behaviour",
            about="cross_species.timing_signature",
            shows="cross-species panel",
            n_from="signature",
            optional={"ieeg_timecourses": ("table:ieeg_timecourses", "ieeg")},
        ),
    )
}


@dataclass
class Outcome:
    """What a pooled step gives back: the result rows, and what to draw and record from them."""

    result: Any  # pd.DataFrame in the pooled_result shape
    figure: Callable[[Path], None] | None = None
    metrics: dict[str, Any] | None = None
    summary: str = ""


def analysis_options(config: dict[str, Any], analysis: str) -> dict[str, Any]:
    """What one pooled analysis reads of a (validated, default-filled) config: its own section
    as ``analysis`` and each key of its :attr:`Analysis.reads` by its dotted path. The workflow
    gives exactly this as the job's params, so editing a key reruns the analyses that read it."""
    options: dict[str, Any] = {"analysis": config.get("analyses", {}).get(analysis, {})}
    for dotted in ANALYSES[analysis].reads:
        value: Any = config
        for part in dotted.split("."):
            value = value[part]
        options[dotted] = value
    return options


def planned(config_groups: dict[str, list[str]]) -> list[str]:
    """The analyses a consortium with these site groups runs, in registry order."""
    return [a.name for a in ANALYSES.values() if all(config_groups[g] for g in a.needs)]


def planned_figures(config_groups: dict[str, list[str]]) -> list[str]:
    return [f.name for f in FIGURES.values() if all(config_groups[g] for g in f.needs)]


def n_source(figure: str) -> str:
    """The file whose n the report states beside a figure (see :attr:`Figure.n_from`)."""
    spec = FIGURES[figure]
    ref = spec.inputs.get(spec.n_from, spec.n_from)
    kind, _, what = ref.partition(":")
    return table_path(what) if kind == "table" else result_path(what)


def table_path(table: str) -> str:
    return f"results/tables/{table}.parquet"


def result_path(analysis: str) -> str:
    return f"results/pooled/{analysis}.parquet"


def run(
    analysis: str,
    inputs: dict[str, str],
    output: str | Path,
    options: dict[str, Any],
    figure: str | Path | None = None,
    metrics: str | Path | None = None,
) -> None:
    """Run one pooled analysis on the consortium tables ``inputs`` ({table: path}; optional
    tables may be absent), write its result, and its figure or metrics."""
    from ketamap import schemas

    spec = ANALYSES[analysis]
    tables = {table: schemas.read_table(path, table) for table, path in inputs.items()}
    step = getattr(importlib.import_module(spec.module), spec.function)
    outcome: Outcome = step(tables, options)
    schemas.write_table(outcome.result, RESULT_TABLE, output)
    if figure is not None and outcome.figure is not None:
        outcome.figure(Path(figure))
    if metrics is not None and outcome.metrics is not None:
        Path(metrics).parent.mkdir(parents=True, exist_ok=True)
        integrity.atomic_write_text(
            metrics, json.dumps(outcome.metrics, indent=2, sort_keys=True) + "\n"
        )
    log.info("%s: %s", analysis, outcome.summary)


def draw(name: str, inputs: dict[str, str], output: str | Path) -> None:
    """Draw one figure of :data:`FIGURES` from ``inputs`` ({argument: path})."""
    from ketamap import schemas

    spec = FIGURES[name]
    kinds = {**spec.inputs, **{k: v[0] for k, v in spec.optional.items()}}
    frames = {}
    for argument, path in inputs.items():
        kind, _, what = kinds[argument].partition(":")
        frames[argument] = schemas.read_table(path, what if kind == "table" else RESULT_TABLE)
    getattr(importlib.import_module(spec.module), spec.function)(**frames, output=Path(output))


def __getattr__(name: str) -> Any:
    """The shared statistics (:mod:`ketamap.pooled.stats`), importable from here as before."""
    if name in ("result_frame", "bh_qvalues", "fit_mixed", "random_variance_ratio"):
        from ketamap.pooled import stats

        return getattr(stats, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
