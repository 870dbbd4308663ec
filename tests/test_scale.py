"""Planning at scale (issue 13): a generated 300-site config plans within a bound of a bare
Snakemake workflow of the same shape, both measured in this test on this machine.

The two projects are those of ``benchmarks/dag_scale.py`` (``tests/scale_project.py``): a copy of
the workflow with 300 generated sites (PET, iEEG and behaviour in turn; 1,033 jobs), nothing
fetched, and a plain Snakefile with the same rules, jobs per rule and inputs per job. Each is
planned with ``snakemake --dry-run`` in a fresh process.

A timing assertion is allowed here, and only here, because the issue asks for exactly this: a
bound *relative* to the bare workflow *measured in the same test*, so the machine's speed cancels
out. What is left is noise from other processes on a shared 2-core CI machine, kept down by:

- CPU time (user + system of the snakemake process, from ``os.wait4``), not wall time: waiting
  for a core does not count;
- the two sides run in turn (bare, ketamap, bare, ketamap, ...), so a slow minute hits both;
- best of ``ROUNDS`` per side; when the ratio is above the bound, up to ``EXTRA_ROUNDS`` more
  rounds before failing (a real regression stays above the bound, a noisy round does not).

Bounds, measured on 2 vCPUs shared with other test runs (CPU seconds, best of 2-5 rounds):
ketamap 5.1-5.5 s vs bare 4.1-4.2 s, ratio 1.23-1.36x; peak RSS 206 vs 201 MB (1.03x).
``TIME_BOUND`` = 1.5x is the issue's target ratio. What it catches was checked by putting a
regression back in a copy of the code and running this test's measurement on it:

- the ``step_code`` scan cache dropped (every rule re-parses the package's sources): 1.66x, fails;
- the 300-way site alternation put back as the ``site`` wildcard constraint: 1.42-1.49x, passes;
- the whole commit that fixed planning at scale reverted (alternation, linear ``site_by_id``,
  per-job tree walks): 1.44x, passes.

The last two cost 0.1-0.2x of the bare planning at 300 sites with nothing fetched (their cost
grows with sites x jobs and with fetched files): no bound at this size separates them from today's
1.23-1.36x without failing on a busy machine. They are measured where they matter, at 1,500 sites
and 10,000 fetched sessions, by ``benchmarks/dag_scale.py``. This test catches what adds a
quarter of the bare planning time or more at 300 sites (about 1 s of CPU, 1 ms per job).
``MEMORY_BOUND`` = 1.2x: ketamap's config and registries add 5 MB.
"""

from __future__ import annotations

import pytest

from scale_project import (
    bare_project,
    ketamap_project,
    planning_ratio,
    project_pair,
    shape,
    shape_differences,
    site_entries,
)

pytestmark = pytest.mark.scale

SITES = 300
TIME_BOUND = 1.5  # ketamap CPU seconds / bare CPU seconds, best of the rounds of each
MEMORY_BOUND = 1.2  # ketamap peak RSS / bare peak RSS
ROUNDS = 2
EXTRA_ROUNDS = 3


def cpu_seconds(runs: dict) -> str:
    """Each side's CPU seconds, round by round."""
    return "CPU s " + ", ".join(
        f"{name} [{', '.join(f'{r.cpu:.2f}' for r in runs[name])}]" for name in ("ketamap", "bare")
    )


def test_300_sites_plan_within_bound_of_bare_snakemake(tmp_path):
    sites = site_entries(SITES)
    ketamap = ketamap_project(tmp_path / "ketamap", sites)
    bare = bare_project(tmp_path / "bare", sites)

    ratio, runs = planning_ratio(ketamap, bare, ROUNDS, EXTRA_ROUNDS, TIME_BOUND)

    kshape, bshape = shape(runs["ketamap"][-1].text), shape(runs["bare"][-1].text)
    assert kshape[0] > 3 * SITES, f"{kshape[0]} jobs planned for {SITES} sites"
    assert not shape_differences(kshape, bshape), shape_differences(kshape, bshape)

    report = f"{SITES} sites, {kshape[0]} jobs: {cpu_seconds(runs)}"
    print(report)
    assert ratio <= TIME_BOUND, (
        f"ketamap plans {ratio:.2f}x slower than bare Snakemake (bound {TIME_BOUND}x); {report}; "
        "profile with benchmarks/dag_scale.py --sites 300"
    )
    kmb = max(r.mb for r in runs["ketamap"])
    bmb = max(r.mb for r in runs["bare"])
    assert kmb <= MEMORY_BOUND * bmb, (
        f"ketamap's planning peaks at {kmb:.0f} MB, bare Snakemake's at {bmb:.0f} MB "
        f"(bound {MEMORY_BOUND}x)"
    )


SESSIONS = 1500


def test_300_sites_fetched_per_session_plan_from_the_plugin_index_within_bound(tmp_path):
    """fetch.per_session with 1,500 sessions fetched: every session job and gather has its session
    folders as inputs of the DVC storage plugin, planned from the index each fetch wrote. The
    registry URL does not exist, so planning that opened a registry fails here; the bound is the
    one above, against a bare workflow whose session folders are plain fetched inputs."""
    sites = site_entries(SITES)
    ketamap, bare, _ = project_pair(tmp_path, "ps", sites, SESSIONS, per_session=True)

    ratio, runs = planning_ratio(ketamap, bare, ROUNDS, EXTRA_ROUNDS, TIME_BOUND)

    kshape, bshape = shape(runs["ketamap"][-1].text), shape(runs["bare"][-1].text)
    assert kshape[1].get("harmonize_ieeg_session", 0) >= SESSIONS // 3, kshape[1]
    assert not shape_differences(kshape, bshape), shape_differences(kshape, bshape)
    report = (
        f"{SITES} sites, {SESSIONS} sessions per session, {kshape[0]} jobs: {cpu_seconds(runs)}"
    )
    print(report)
    assert ratio <= TIME_BOUND, (
        f"ketamap plans {ratio:.2f}x slower than bare Snakemake (bound {TIME_BOUND}x); {report}; "
        "profile with benchmarks/dag_scale.py --per-session only --profile per_session"
    )
