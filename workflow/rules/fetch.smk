# Each site's dataset, pulled through DVC at the revision pinned in the config.
#
# Reruns follow content, not timestamps. The fetch is a checkpoint, so Snakemake re-plans after it:
# the jobs reading the fetched tree take it as ancient() (its mtime never reruns them) and its
# content id (resources/raw/<site>.content, the md5 of the dataset's file listing) as a plain input,
# which Snakemake compares by checksum. A refetch of identical data therefore reruns nothing
# downstream; a fetch that brings other bytes reruns exactly that site's harmonization.
checkpoint fetch:
    input:
        registry=registry_input,
        code=code("registry.py", "steps.py"),
    output:
        data=directory("resources/raw/{site}"),
        manifest="resources/raw/{site}.fetch.json",
        content="resources/raw/{site}.content",
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
