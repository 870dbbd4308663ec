# Each site's dataset, pulled through DVC at the revision pinned in the config.
rule fetch:
    input:
        registry=registry_input,
        code=code("registry.py", "steps.py"),
    output:
        data=directory("resources/raw/{site}"),
        manifest="resources/raw/{site}.fetch.json",
    log:
        "logs/fetch/{site}.log",
    threads: 1
    # Fixed: the input is the registry's git metadata; the dataset's size is known only after the
    # pull, which streams each file and checks its md5.
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        site=fetch_entry,
    script:
        "../scripts/fetch.py"
