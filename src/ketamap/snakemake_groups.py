"""Snakemake with stable job groups: what ``python -m ketamap.slurm`` runs instead of
``python -m snakemake`` (the Snakemake of the submit host only; the jobs on the nodes run plain
Snakemake).

``--group-components <group>=N`` joins N connected components of a group into one group job.
Snakemake 9.27 (``DAG._update_group_components``) does it by merging the group jobs in place, and
forms the groups again each time the DAG changes (at the start, again while planning, and after
every checkpoint, here each site's fetch). Two faults follow, both seen on a real cluster:

- the group jobs it merges are the ones its factory caches per component, so the next time the
  groups are formed a cached "component" already holds earlier merges: groups grow past N, and a
  group job's hash (its job set) changes after it was put in the ready set, so it is never taken
  out of it and is submitted again every second;
- jobs of a group already submitted are put into new groups with jobs a checkpoint added, and run
  a second time, concurrently (snakemake-executor-plugin-slurm issue 253; snakemake issue 1628).

The replacement here keeps the jobs of a running group job in it, never mutates a group job
(a chunk is a new group job from the factory, so the same chunk is the same object), and orders
the components (rule, then wildcards) so that forming the groups again gives the same chunks. A
chunk holds sessions of one site only: a group job fails as a whole, so a chunk across sites would
let one bad site fail another's sessions (seen on the test cluster).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from snakemake.common import group_into_chunks


def _order(group: Any) -> list[tuple[str, list[tuple[str, str]]]]:
    return sorted(
        (job.rule.name, sorted((k, str(v)) for k, v in job.wildcards_dict.items()))
        for job in group.jobs
    )


def _sites(group: Any) -> tuple[str, ...]:
    return tuple(sorted({str(job.wildcards_dict.get("site", "")) for job in group.jobs}))


def update_group_components(self: Any) -> None:
    """``DAG._update_group_components`` without in-place merges and without regrouping jobs that
    are running."""
    running = {job: group for group in self._running if group.is_group() for job in group.jobs}
    components: dict[str, dict[frozenset[Any], Any]] = defaultdict(dict)
    for job, group in list(self._group.items()):
        if job in running:
            self._group[job] = running[job]
        else:
            components[group.groupid][frozenset(group.jobs)] = group
    for groupid, found in components.items():
        lookup = self.workflow.parent_groupids.get(groupid, groupid)
        size = self.workflow.group_settings.group_components.get(lookup, 1)
        if size <= 1:
            continue
        # Chunks never span sites: a group job fails as a whole, and one bad site must not take
        # another site's sessions down with it.
        by_site: dict[tuple[str, ...], list[Any]] = defaultdict(list)
        for group in sorted(found.values(), key=_order):
            by_site[_sites(group)].append(group)
        chunks = [c for groups in by_site.values() for c in group_into_chunks(size, groups)]
        for chunk in chunks:
            if len(chunk) < 2:
                continue
            jobs = frozenset().union(*(group.jobs for group in chunk))
            merged = self.group_job_factory.new(groupid, jobs, self.workflow.global_resources)
            for job in jobs:
                self._group[job] = merged
    for group in set(self._group.values()):
        group.finalize()


def patch() -> None:
    import snakemake.cli  # noqa: F401  (snakemake.dag needs snakemake.workflow imported first)
    from snakemake.dag import DAG

    if not hasattr(DAG, "_update_group_components"):
        raise RuntimeError(
            "snakemake.dag.DAG has no _update_group_components: this Snakemake is not the 9.27 of "
            "requirements.lock; run with SLURM_GROUP_SESSIONS=1 or adapt ketamap.snakemake_groups"
        )
    DAG._update_group_components = update_group_components


def main() -> None:
    patch()
    from snakemake.cli import main as snakemake_main

    snakemake_main()


if __name__ == "__main__":
    main()
