# The demo consortium: synthesized site datasets released into a local git + DVC registry.
# The commands run `python -m ketamap.cli` with Snakemake's own interpreter (the project's venv,
# params.python), so a job finds them without an activated venv or `ketamap` on PATH, on a SLURM
# node too.
import sys

if config.get("demo"):

    # The scenario is read for what it says, not for its bytes: ancient() drops its mtime and the
    # params carry a digest of its parsed content, so a comment or layout edit reruns nothing.
    rule demo_synth:
        input:
            scenario=ancient(config["demo"]["scenario"]),
            code=step_code("ketamap.synth"),
        output:
            sites=directory("resources/demo/sites"),
        log:
            "logs/demo/synth.log",
        threads: 1
        # Fixed: the input is the scenario YAML, whose size says nothing about the work.
        resources:
            mem_mb=2000,
            runtime=10,
        params:
            python=sys.executable,
            scenario=yaml_digest(config["demo"]["scenario"]),
        shell:
            "{params.python:q} -m ketamap.cli synth --scenario {input.scenario} --out {output.sites} --overwrite > {log} 2>&1"

    rule demo_registry:
        input:
            sites=rules.demo_synth.output.sites,
            code=step_code("ketamap.registry"),
        output:
            registry=directory(config["demo"]["registry"]),
            remote=directory(config["demo"]["remote"]),
        log:
            "logs/demo/registry.log",
        threads: 1
        # DVC hashes and copies the files by streaming: memory fixed, time grows with the data.
        resources:
            mem_mb=2000,
            runtime=scaled_runtime(10, per_gb=10),
        # A fixed commit date (and the fixed identity of every registry commit) makes the demo
        # registry's commits, and so results/manifest.json, the same in every lab.
        params:
            release=config["demo"]["release"],
            python=sys.executable,
            date="2026-01-01T00:00:00+00:00",
        shell:
            "{params.python:q} -m ketamap.cli registry --sites {input.sites} --out {output.registry} "
            "--remote {output.remote} --release {params.release} --date {params.date} > {log} 2>&1"
