"""ketamap: multi-site PET, iEEG and behaviour data harmonized under shared schemas and pooled.

Public entry points: :func:`ketamap.synth.generate` (synthetic consortium),
:func:`ketamap.registry.build_registry` / :func:`ketamap.registry.fetch_site` (versioned data
through DVC), :func:`ketamap.schemas.write_table` (the one Parquet writer) and the pooled analyses
in :mod:`ketamap.pooled`.
"""

__version__ = "0.1.0"
