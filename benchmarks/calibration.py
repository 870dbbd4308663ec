"""Calibration of every pooled analysis that reports a p-value or a confidence interval.

For each analysis and layout: replicate consortia at the published sizes (the scenario files with
the seed changed per replicate, or the hierarchical iEEG/behaviour simulations of
:mod:`ketamap.calibration`), the analysis run as the workflow runs it, and one table:

- type-I error at alpha 0.05 over the rows whose planted value is null (a TOST row: when the
  true difference sits on the equivalence margin);
- coverage of the 95 % interval over the rows with a planted effect.

Targets: type-I <= 5.5 % and coverage 93-97 %; a row that misses is marked NOT calibrated. No
images are written (function level), so the whole table takes minutes:

    .venv/bin/python benchmarks/calibration.py                 # full size, 2 processes
    .venv/bin/python benchmarks/calibration.py --reps-pet 40 --reps-sim 200 --only clinical,pet
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from ketamap import calibration as cal

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = REPO / "config" / "scenarios"
PET = (
    "pet.baseline_trd_vs_hc",
    "pet.ketamine_x_time",
    "pet.change_vs_improvement",
    "pet.response_prediction",
)


def plant_predictor(scenario: dict) -> None:
    scenario["pet"]["effects"]["response_predictor"] = {"region": "habenula", "correlation": 0.5}


def cases(reps_pet: int, reps_sim: int, reps_clinical: int) -> list[cal.Case]:
    default = SCENARIOS / "default.yaml"
    two = SCENARIOS / "pet_two_rcts.yaml"
    partial = SCENARIOS / "pet_partial_same_model.yaml"
    out = [
        *cal.scenario_cases(
            default, "1 RCT 17/17, 49 HC", ("clinical.madrs_change",), reps_clinical
        ),
        *cal.scenario_cases(
            two,
            "2 RCTs (one HAM-D-17), dropouts",
            ("clinical.madrs_change",),
            reps_clinical,
        ),
        *cal.scenario_cases(
            default,
            "default: shared scanner + HC-only scanner",
            PET,
            reps_pet,
            regions=("habenula", "acc"),
            edit=plant_predictor,
        ),
        *cal.scenario_cases(
            default,
            "default: shared scanner + HC-only scanner",
            ("pet.baseline_trd_vs_hc",),
            reps_pet,
            kinds=("null",),
            legacy=True,
        ),
        *cal.scenario_cases(
            partial,
            "HC-only 2nd device of the same model",
            ("pet.baseline_trd_vs_hc",),
            reps_pet,
            edit=lambda s: s["pet"]["effects"].update(
                trd_vs_hc_d=[{"region": "acc", "value": -0.5}, {"region": "insula", "value": -0.5}]
            ),
        ),
        *cal.scenario_cases(
            two,
            "2 RCTs (one HAM-D-17), 15 % PET dropouts",
            PET,
            reps_pet,
            regions=("habenula", "acc"),
            edit=plant_predictor,
        ),
        *cal.simulated_cases(reps_sim),
    ]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps-pet", type=int, default=200, help="replicates per PET case")
    parser.add_argument(
        "--reps-clinical", type=int, default=1000, help="replicates per clinical case"
    )
    parser.add_argument(
        "--reps-sim", type=int, default=2000, help="replicates per iEEG/behaviour case"
    )
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument(
        "--only", default="", help="comma-separated case names (clinical, pet, ieeg, ...)"
    )
    parser.add_argument("--csv", type=Path, help="also write the summary as CSV")
    args = parser.parse_args(argv)
    wanted = {w.strip() for w in args.only.split(",") if w.strip()}
    results = []
    start = time.perf_counter()
    for case in cases(args.reps_pet, args.reps_sim, args.reps_clinical):
        if wanted and not any(w in case.name for w in wanted):
            continue
        t0 = time.perf_counter()
        results.append(cal.run_case(case, jobs=args.jobs))
        print(
            f"{case.name:45s} {case.kind:8s} {case.layout[:40]:40s} {case.reps:5d} reps "
            f"{time.perf_counter() - t0:7.1f} s",
            file=sys.stderr,
        )
    summary = cal.summarize(pd.concat(results, ignore_index=True))
    print(cal.format_table(summary))
    print(f"\n{time.perf_counter() - start:.0f} s in all", file=sys.stderr)
    if args.csv:
        summary.to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
