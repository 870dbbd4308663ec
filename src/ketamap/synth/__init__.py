"""Synthetic consortium generator.

Writes site datasets that look like what the real sites send (including their quirks) from a
scenario file, together with ``ground_truth.json`` listing every planted effect, so the whole
pipeline can be tested end to end against known answers.

Public API
----------
load_scenario(path)
    Read and validate a scenario, defaults filled in.
generate(scenario_path, out_dir, overwrite=False)
    Write ``out_dir/<site_id>/...`` and ``out_dir/ground_truth.json``; returns the latter.
site_configs(scenario, registry, revision)
    The workflow-config site entries matching what was generated.
analysis_options(scenario)
    The workflow-config options (remission threshold, reference region, eyelid windows, ...)
    the ground truth assumes.
atlas_config(scenario, registry, revision)
    The workflow-config ``atlas`` entry (``datasets/atlas``) of the atlas written with PET sites.
"""

from __future__ import annotations

from ketamap.synth.consortium import analysis_options, generate, load_scenario, site_configs
from ketamap.synth.pet import atlas_config

__all__ = ["analysis_options", "atlas_config", "generate", "load_scenario", "site_configs"]
