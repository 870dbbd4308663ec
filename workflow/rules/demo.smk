# The demo consortium: synthesized site datasets released into a local git + DVC registry.
if config.get("demo"):

    rule demo_synth:
        input:
            scenario=config["demo"]["scenario"],
        output:
            sites=directory("resources/demo/sites"),
        log:
            "logs/demo/synth.log",
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        shell:
            "ketamap synth --scenario {input.scenario} --out {output.sites} --overwrite > {log} 2>&1"

    rule demo_registry:
        input:
            sites=rules.demo_synth.output.sites,
        output:
            registry=directory(config["demo"]["registry"]),
            remote=directory(config["demo"]["remote"]),
        log:
            "logs/demo/registry.log",
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        params:
            release=config["demo"]["release"],
        shell:
            "ketamap registry --sites {input.sites} --out {output.registry} "
            "--remote {output.remote} --release {params.release} > {log} 2>&1"
