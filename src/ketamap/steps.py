"""One function per workflow step, called by the thin scripts in ``workflow/scripts``.

Each takes plain paths and config values, so the steps can be run and tested without Snakemake.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from ketamap import __version__, clinical, registry, schemas
from ketamap.config import with_defaults
from ketamap.errors import KetamapError
from ketamap.ids import load_key
from ketamap.pooled import RESULT_TABLE
from ketamap.pooled import clinical as pooled_clinical

log = logging.getLogger("ketamap.steps")


def fetch_site(
    site: dict[str, Any],
    dest: str | Path,
    manifest: str | Path,
    content: str | Path | None = None,
    base: str | Path = ".",
    options: dict[str, Any] | None = None,
) -> None:
    """Pull one site's dataset at its pinned revision and write its fetch manifest, and (to
    ``content``) its content id: what the jobs reading the data compare to know whether to rerun.

    ``options`` is the config's ``fetch`` section (``timeout``, ``remote_options``).
    """
    options = with_defaults(options, "fetch")
    timeout = float(options["timeout"])
    log.info(
        "fetching site %s from %s at %s (remote timeout %g s)",
        site["id"],
        site["registry"],
        site["revision"],
        timeout,
    )
    result = registry.fetch_site(
        site,
        Path(dest),
        base=Path(base),
        timeout=timeout,
        remote_options=options["remote_options"] or None,
    )
    registry.write_manifest(result, Path(manifest))
    if content is not None:
        Path(content).write_text(registry.content_id(result) + "\n")
    log.info(
        "site %s: %d files, %d bytes, commit %s verified",
        site["id"],
        result["n_files"],
        result["bytes"],
        result["commit"],
    )


def harmonize_clinical(
    site: dict[str, Any],
    raw: str | Path,
    subjects_out: str | Path,
    scores_out: str | Path,
    config: dict[str, Any],
) -> None:
    """Harmonize one site's participants and symptom scores into its per-site tables."""
    tables = clinical.harmonize_site(site, Path(raw), load_key(config))
    schemas.write_table(tables.subjects, "subjects", subjects_out)
    schemas.write_table(tables.clinical_scores, "clinical_scores", scores_out)
    converted = int(tables.clinical_scores["converted"].sum()) if len(tables.clinical_scores) else 0
    log.info(
        "site %s: %d subjects, %d scores (%d converted to MADRS)",
        site["id"],
        len(tables.subjects),
        len(tables.clinical_scores),
        converted,
    )


def combine_tables(inputs: list[str], table: str, output: str | Path) -> None:
    """Concatenate the per-site tables into the consortium table (validated again as a whole)."""
    frames = [schemas.read_table(p, table) for p in sorted(inputs)]
    combined = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=schemas.get_table(table).field_names)
    )
    schemas.write_table(combined, table, output)
    log.info("%s: %d rows from %d sites", table, len(combined), len(frames))


def pooled_madrs_change(
    subjects: str | Path,
    scores: str | Path,
    output: str | Path,
    metrics: str | Path,
    options: dict[str, Any],
) -> None:
    """The pooled clinical analysis of the trials, and its headline metrics.

    ``options``: what :func:`ketamap.config.analysis_options` gives ``clinical.madrs_change``.
    """
    result = pooled_clinical.analyze_madrs_change(
        schemas.read_table(subjects, "subjects"),
        schemas.read_table(scores, "clinical_scores"),
        response_fraction=float(options["clinical.response_fraction"]),
        remission_threshold=float(options["clinical.remission_threshold"]),
    )
    schemas.write_table(result, RESULT_TABLE, output)
    Path(metrics).parent.mkdir(parents=True, exist_ok=True)
    Path(metrics).write_text(
        json.dumps(pooled_clinical.metrics(result), indent=2, sort_keys=True) + "\n"
    )
    diff = result[result["term"] == "arm_difference"].iloc[0]
    log.info(
        "arm difference %.2f MADRS points, t(%g) = %.2f, p = %.3f",
        diff["estimate"],
        diff["df"],
        diff["statistic"],
        diff["p_value"],
    )


def with_thresholds(result: pd.DataFrame, rule: str) -> pd.DataFrame:
    """Every row states the measurement thresholds its input was made with (in ``method``)."""
    return result.assign(method=result["method"].astype(str) + "; " + rule)


def write_run_manifest(
    config: dict[str, Any],
    fetch_manifests: list[str],
    outputs: list[str],
    path: str | Path,
    workdir: str | Path = ".",
) -> None:
    """Record what produced the results: each site's revision and hashes, code version, config, outputs.

    No timestamps: an unchanged rerun gives an identical manifest.
    """
    sites = []
    for p in sorted(fetch_manifests):
        m = json.loads(Path(p).read_text())
        sites.append(
            {
                k: m[k]
                for k in (
                    "site",
                    "registry",
                    "path",
                    "revision",
                    "commit",
                    "dvc_md5",
                    "n_files",
                    "bytes",
                )
            }
        )
    files = []
    for p in sorted(outputs):
        entry: dict[str, Any] = {"path": p, "sha256": _sha256(Path(p))}
        if p.endswith(".parquet"):
            meta = pq.read_schema(p).metadata or {}
            entry["table"] = meta.get(schemas.METADATA_TABLE, b"").decode()
            entry["schema_version"] = int(meta.get(schemas.METADATA_VERSION, b"0"))
            entry["rows"] = pq.read_metadata(p).num_rows
        files.append(entry)
    # Neither the key nor how this machine reaches the remotes (keyfile, timeout) says anything
    # about the results: two labs with the same config otherwise get the same manifest.
    config_public = {k: v for k, v in config.items() if k not in ("pseudonymization", "fetch")}
    manifest = {
        "ketamap_version": __version__,
        "code_commit": _git_commit(Path(workdir)),
        "config_sha256": hashlib.sha256(
            json.dumps(config_public, sort_keys=True, default=str).encode()
        ).hexdigest(),
        "schemas_sha256": hashlib.sha256(schemas.describe_json().encode()).hexdigest(),
        "sites": sites,
        "outputs": files,
    }
    registry.write_manifest(manifest, Path(path))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _git_commit(workdir: Path) -> str:
    proc = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=workdir, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        return "unknown (not a git checkout)"
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def harmonize_pet(
    site: dict[str, Any],
    raw: str | Path,
    atlas: str | Path,
    regional_out: str | Path,
    sessions_out: str | Path,
    config: dict[str, Any],
) -> None:
    """Harmonize one site's PET scans into its per-site pet_regional and pet_sessions tables."""
    from ketamap import pet

    tables = pet.harmonize_site(
        site, Path(raw), pet.read_atlas(Path(atlas)), load_key(config), config["pet"]
    )
    schemas.write_table(tables.regional, "pet_regional", regional_out)
    schemas.write_table(tables.sessions, "pet_sessions", sessions_out)
    warned = int((tables.sessions["warnings"] != "").sum()) if len(tables.sessions) else 0
    log.info(
        "site %s: %d PET scans, %d regional values, %d scans with warnings",
        site["id"],
        len(tables.sessions),
        len(tables.regional),
        warned,
    )


def pooled_pet(
    analysis: str,
    regional: str | Path,
    subjects: str | Path,
    scores: str | Path,
    output: str | Path,
    figure: str | Path,
    options: dict[str, Any],
) -> None:
    """One pooled PET analysis (pet.<name>) in the shared result shape, and its figure.

    ``options``: what :func:`ketamap.config.analysis_options` gives the analysis.
    """
    from ketamap import figures
    from ketamap.pooled import pet as pooled

    reg = schemas.read_table(regional, "pet_regional")
    subj = schemas.read_table(subjects, "subjects")
    sc = schemas.read_table(scores, "clinical_scores")
    if reg.empty:
        raise KetamapError(
            "pet_regional has no rows", file=str(regional), expected="PET scans from a PET site"
        )
    if analysis == "pet.baseline_trd_vs_hc":
        result = pooled.analyze_baseline(reg, subj)
    elif analysis == "pet.ketamine_x_time":
        result = pooled.analyze_ketamine_x_time(reg, subj)
    elif analysis == "pet.change_vs_improvement":
        result = pooled.analyze_change_vs_improvement(reg, subj, sc)
    elif analysis == "pet.response_prediction":
        spec = with_defaults(options["analysis"], "analyses", analysis)
        result = pooled.analyze_response_prediction(
            reg,
            subj,
            sc,
            regions=list(spec["regions"]),
            arm=str(spec["arm"]),
            response_fraction=float(options["clinical.response_fraction"]),
            min_per_class=int(spec["min_per_class"]),
        )
    else:
        raise ValueError(f"unknown PET analysis {analysis!r}")
    schemas.write_table(result, RESULT_TABLE, output)
    figures.forest_plot(result, figure, null=0.5 if analysis == "pet.response_prediction" else 0.0)
    significant = int((result["q_value"] < 0.05).sum())
    log.info("%s: %d rows, %d with q < 0.05", analysis, len(result), significant)


def figure_change_scatter(
    result: str | Path,
    regional: str | Path,
    subjects: str | Path,
    scores: str | Path,
    figure: str | Path,
) -> None:
    """Scatter of regional % change against MADRS improvement for the strongest regions."""
    from ketamap import figures
    from ketamap.pooled import pet as pooled
    from ketamap.pooled.clinical import change_table

    reg = schemas.read_table(regional, "pet_regional")
    clinical = change_table(
        schemas.read_table(subjects, "subjects"), schemas.read_table(scores, "clinical_scores")
    )
    ket = clinical[clinical["arm"] == "ketamine"].set_index("subject_id")
    pct = pooled.percent_change(reg)
    common = pct.index.intersection(ket.index)
    figures.change_scatter(
        pct.loc[common],
        -ket.loc[common, "change"],
        schemas.read_table(result, RESULT_TABLE),
        figure,
    )


def figure_pet_batches(regional: str | Path, subjects: str | Path, figure: str | Path) -> None:
    """Baseline SUVR by acquisition batch and group, as measured and after ComBat (display only)."""
    from ketamap import figures
    from ketamap.pooled import pet as pooled

    reg = schemas.read_table(regional, "pet_regional")
    raw, harmonized, check = pooled.batch_overview(reg, schemas.read_table(subjects, "subjects"))
    figures.batch_plot(raw, harmonized, f"design check: {check.note}", figure)


def harmonize_ieeg(
    site: dict[str, Any],
    raw: str | Path,
    channels_out: str | Path,
    responses_out: str | Path,
    timecourses_out: str | Path,
    synchrony_out: str | Path,
    config: dict[str, Any],
) -> None:
    """Harmonize one site's iEEG puff recordings into its per-site iEEG tables."""
    from ketamap import ieeg

    tables = ieeg.harmonize_site(site, Path(raw), load_key(config), config["ieeg"])
    schemas.write_table(tables.channels, "ieeg_channels", channels_out)
    schemas.write_table(tables.responses, "ieeg_responses", responses_out)
    schemas.write_table(tables.timecourses, "ieeg_timecourses", timecourses_out)
    schemas.write_table(tables.synchrony, "ieeg_synchrony", synchrony_out)
    good = int((tables.channels["channel_status"] == "good").sum())
    log.info(
        "site %s: %d channels (%d good), %d responses",
        site["id"],
        len(tables.channels),
        good,
        len(tables.responses),
    )
    for warning in tables.qc.get("warnings", pd.Series(dtype=str)).dropna():
        if warning:
            log.warning("site %s: %s", site["id"], warning)


def combine_ieeg_timecourses(inputs: list[str], output: str | Path) -> None:
    """Pool the per-site timecourses exactly (channel-weighted means, pooled SEM)."""
    from ketamap import ieeg

    frames = [schemas.read_table(p, "ieeg_timecourses") for p in sorted(inputs)]
    schemas.write_table(ieeg.combine_timecourses(frames), "ieeg_timecourses", output)


def pooled_ieeg(
    analysis: str,
    responses: str | Path,
    synchrony: str | Path,
    output: str | Path,
    figure: str | Path,
    options: dict[str, Any],
) -> None:
    """One pooled iEEG analysis (ieeg.<name>) in the shared result shape, and its figure: the
    forest plot, and the per-subject values of the two conditions beside it.

    ``options``: what :func:`ketamap.config.analysis_options` gives the analysis.
    """
    from ketamap import figures
    from ketamap.pooled import ieeg as pooled

    table = schemas.read_table(responses, "ieeg_responses")
    if analysis == "ieeg.slow_phase_duration":
        result = pooled.analyze_slow_phase_duration(table)
        per_subject = pooled.subject_slow_durations(table)
        what = "mean slow-phase duration (s)\nof baseline slow channels"
    elif analysis == "ieeg.fast_phase_latency":
        spec = with_defaults(options["analysis"], "analyses", analysis)
        result = pooled.analyze_fast_phase_latency(
            table, margin_s=float(spec["equivalence_margin_s"])
        )
        per_subject = pooled.subject_fast_latencies(table)
        what = "mean fast-peak latency (s)"
    elif analysis == "ieeg.synchrony":
        sync = schemas.read_table(synchrony, "ieeg_synchrony")
        result = pooled.analyze_synchrony(sync)
        per_subject = sync.rename(columns={"synchrony_r": "value"})[
            ["subject_id", "condition", "value"]
        ]
        what = "cross-channel synchrony (r)\nof slow-phase amplitudes"
    else:
        raise ValueError(f"unknown iEEG analysis {analysis!r}")
    result = with_thresholds(
        result,
        f"responses: fast peak and slow phase above {float(options['ieeg.threshold_z']):g} z "
        f"(slow for >= {float(options['ieeg.min_duration_s']):g} s), "
        f"HFB {list(options['ieeg.band_hz'])} Hz, {options['ieeg.reference']} reference",
    )
    schemas.write_table(result, RESULT_TABLE, output)
    figures.paired_forest_plot(
        result.assign(region=result["region_group"].fillna("all channels")),
        per_subject,
        what,
        figure,
    )
    log.info(
        "%s: %d rows, %d with q < 0.05",
        analysis,
        len(result),
        int((result["q_value"] < 0.05).sum()),
    )


def figure_ieeg_timecourses(timecourses: str | Path, figure: str | Path) -> None:
    """Puff-locked high-frequency response by region group and condition."""
    from ketamap import figures

    figures.timecourse_plot(schemas.read_table(timecourses, "ieeg_timecourses"), figure)


def harmonize_behaviour(
    site: dict[str, Any],
    raw: str | Path,
    puffs_out: str | Path,
    timecourses_out: str | Path,
    reward_out: str | Path,
    cues_out: str | Path,
    config: dict[str, Any],
) -> None:
    """Harmonize one site's eyelid tracking (and, for mice, licking) into its behaviour tables."""
    from ketamap import behaviour

    tables = behaviour.harmonize_site(site, Path(raw), load_key(config), config["behaviour"])
    schemas.write_table(tables.puffs, "behaviour_puffs", puffs_out)
    schemas.write_table(tables.timecourses, "behaviour_timecourses", timecourses_out)
    schemas.write_table(tables.reward, "reward_seeking", reward_out)
    schemas.write_table(tables.cues, "reward_cues", cues_out)
    log.info(
        "site %s: %d puffs of %d subjects, median tracking quality %.3f, %d reward epochs",
        site["id"],
        len(tables.puffs),
        tables.puffs["subject_id"].nunique(),
        float(tables.puffs["tracking_quality"].median()) if len(tables.puffs) else float("nan"),
        len(tables.reward),
    )


def pooled_behaviour(
    analysis: str,
    puffs: str | Path,
    timecourses: str | Path,
    reward: str | Path,
    ieeg_responses: str | Path | None,
    output: str | Path,
    figure: str | Path,
    options: dict[str, Any],
) -> None:
    """One pooled behaviour or cross-species analysis in the shared result shape, and its figure.

    ``options``: what :func:`ketamap.config.analysis_options` gives the analysis.
    """
    from ketamap import figures
    from ketamap.pooled import behaviour as pooled

    table = schemas.read_table(puffs, "behaviour_puffs")
    if analysis == "behaviour.reflex_blink":
        spec = with_defaults(options["analysis"], "analyses", analysis)
        result = pooled.analyze_reflex_blink(table, margin=float(spec["equivalence_margin"]))
    elif analysis == "behaviour.sustained_closure":
        result = pooled.analyze_sustained_closure(table)
    elif analysis == "mouse.reward_seeking_after_train":
        result = pooled.analyze_reward_seeking(schemas.read_table(reward, "reward_seeking"))
    elif analysis == "cross_species.timing_signature":
        responses = schemas.read_table(ieeg_responses, "ieeg_responses") if ieeg_responses else None
        spec = with_defaults(options["analysis"], "analyses", analysis)
        window = spec["similarity_window_s"]
        result = pooled.analyze_timing_signature(
            table,
            schemas.read_table(timecourses, "behaviour_timecourses"),
            responses,
            window_s=(float(window[0]), float(window[1])),
            n_boot=int(spec["bootstrap"]),
            seed=int(options["seed"]),
        )
    else:
        raise ValueError(f"unknown behaviour analysis {analysis!r}")
    if analysis == "mouse.reward_seeking_after_train":
        rule = "anticipatory lick = a lick between reward cue and water"
    else:
        windows = "; ".join(
            f"{sp} {list(w)} s" for sp, w in sorted(options["behaviour.sustained_window_s"].items())
        )
        rule = (
            f"reflex window {list(options['behaviour.reflex_window_s'])} s, "
            f"sustained window {windows}, "
            f"tracking cutoff {float(options['behaviour.likelihood_cutoff']):g}"
        )
    result = with_thresholds(result, rule)
    schemas.write_table(result, RESULT_TABLE, output)
    labels = result.apply(
        lambda r: " ".join(
            str(v) for v in (r["term"], r["species"], r["measure"]) if isinstance(v, str)
        ),
        axis=1,
    )
    figures.forest_plot(result.assign(region=labels), figure)
    log.info(
        "%s: %d rows, %d with q < 0.05",
        analysis,
        len(result),
        int((result["q_value"] < 0.05).sum()),
    )


def figure_behaviour(
    kind: str,
    output: str | Path,
    *,
    timecourses: str | Path | None = None,
    cues: str | Path | None = None,
    ieeg_timecourses: str | Path | None = None,
    signature: str | Path | None = None,
) -> None:
    """The behaviour figures: eyelid closure by species and drug, reward seeking around the train,
    and the cross-species panel."""
    from ketamap import figures

    if kind == "eyelid":
        assert timecourses is not None
        figures.eyelid_plot(schemas.read_table(timecourses, "behaviour_timecourses"), output)
    elif kind == "reward":
        assert cues is not None
        figures.reward_plot(schemas.read_table(cues, "reward_cues"), output)
    elif kind == "cross_species":
        assert timecourses is not None and signature is not None
        figures.cross_species_panel(
            schemas.read_table(timecourses, "behaviour_timecourses"),
            schemas.read_table(ieeg_timecourses, "ieeg_timecourses") if ieeg_timecourses else None,
            schemas.read_table(signature, RESULT_TABLE),
            output,
        )
    else:
        raise ValueError(f"unknown behaviour figure {kind!r}")
