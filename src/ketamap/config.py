"""Checks on the workflow configuration beyond its JSON Schema.

The Snakefile validates ``config/config.yaml`` against ``schemas/config.schema.yaml`` with
``snakemake.utils.validate`` at parse time; :func:`check_config` adds the checks a schema cannot
express (unique site ids, a demo registry the sites actually point at).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from ketamap.errors import ConfigError


def resolve_demo_sites(config: dict[str, Any]) -> None:
    """Make the demo sites agree with the demo scenario.

    With ``demo.derive_sites`` the site list is taken from the scenario (what ``make run
    SCENARIO=...`` does); otherwise every listed demo site must read the way the scenario writes
    it, or the run stops naming the site and the fix.
    """
    demo = config.get("demo")
    if not demo:
        if config.get("scenario"):
            raise ConfigError(
                "a scenario was given but the config has no demo section",
                file="config/config.yaml",
                field="scenario",
                expected="a demo section (registry, remote, release) to build the scenario into",
            )
        return
    if config.get("scenario"):
        demo["scenario"] = config["scenario"]
        demo["derive_sites"] = True
    from ketamap import synth

    scenario = synth.load_scenario(demo["scenario"])
    expected = synth.site_configs(scenario, demo["registry"], demo["release"])
    options = synth.analysis_options(scenario)
    if demo.get("derive_sites"):
        config["sites"] = expected
        apply_analysis_options(config, options)
        return
    check_analysis_options(config, options, demo["scenario"])
    by_id = {site["id"]: site for site in expected}
    for i, site in enumerate(config["sites"]):
        if site["registry"] != demo["registry"]:
            continue
        if site["id"] not in by_id:
            raise ConfigError(
                f"site {site['id']!r} points at the demo registry but scenario {demo['scenario']} has no such site",
                file="config/config.yaml",
                field=f"sites[{i}].id",
                expected=f"one of {sorted(by_id)}",
            )
        want = by_id[site["id"]]
        got = {k: site.get(k) for k in ("modality", "species", "trial")}
        # Options the scenario does not set may hold their defaults.
        got["reader"] = {k: site.get("reader", {}).get(k) for k in want["reader"]}
        for key in ("modality", "species", "trial", "reader"):
            if got[key] != want[key]:
                raise ConfigError(
                    f"site {site['id']!r} has {key} {got[key]!r} but the demo scenario writes {want[key]!r}",
                    file="config/config.yaml",
                    field=f"sites[{i}].{key}",
                    expected=repr(want[key]),
                    hint=f"set demo.derive_sites: true, or paste the output of `ketamap site-config --scenario {demo['scenario']}`",
                )


def apply_analysis_options(config: dict[str, Any], options: dict[str, dict[str, Any]]) -> None:
    """Give the config the options the scenario's ground truth assumes (``make run SCENARIO=...``).

    The scenario's values win: its truths were computed with them. Pre-specified prediction regions
    are a list: the scenario's planted predictor is added to the configured ones.
    """
    for section, values in options.items():
        target = config.setdefault(section, {})
        for key, value in values.items():
            if key == "response_prediction":
                spec = target.setdefault(key, {})
                regions = list(spec.get("regions", ["habenula"]))
                spec["regions"] = regions + [r for r in value["regions"] if r not in regions]
            else:
                target[key] = value


def check_analysis_options(
    config: dict[str, Any], options: dict[str, dict[str, Any]], scenario: str
) -> None:
    """A config that lists the demo sites must use the options the demo scenario's truths assume."""
    for section, values in options.items():
        for key, want in values.items():
            if key == "response_prediction":  # a choice of hypotheses, not a rule of the truth
                continue
            got = config.get(section, {}).get(key)
            if got is not None and _same(got, want):
                continue
            raise ConfigError(
                f"{section}.{key} is {got!r} but the demo scenario's ground truth assumes {want!r}",
                file="config/config.yaml",
                field=f"{section}.{key}",
                expected=repr(want),
                hint=f"set it to {want!r}, change it in {scenario}, or run `make run SCENARIO={scenario}`, "
                "which takes it from the scenario",
            )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return float(a) == float(b)
    return bool(a == b)


def check_config(config: dict[str, Any]) -> None:
    """Raise a :class:`ConfigError` naming the key when the config is inconsistent."""
    ids = Counter(site["id"] for site in config["sites"])
    dupes = sorted(i for i, n in ids.items() if n > 1)
    if dupes:
        raise ConfigError(
            f"site ids {dupes} are listed more than once",
            file="config/config.yaml",
            field="sites[].id",
            expected="unique site ids",
        )
    demo = config.get("demo")
    if demo:
        atlas = config.get("atlas")
        if (
            atlas
            and atlas["registry"] == demo["registry"]
            and str(atlas["revision"]) != demo["release"]
        ):
            raise ConfigError(
                f"the atlas pins revision {atlas['revision']!r} of the demo registry, which is built as release {demo['release']!r}",
                file="config/config.yaml",
                field="atlas.revision",
                expected=repr(demo["release"]),
            )
        for i, site in enumerate(config["sites"]):
            if site["registry"] == demo["registry"] and str(site["revision"]) != demo["release"]:
                raise ConfigError(
                    f"site {site['id']!r} pins revision {site['revision']!r} of the demo registry, which is built as release {demo['release']!r}",
                    file="config/config.yaml",
                    field=f"sites[{i}].revision",
                    expected=repr(demo["release"]),
                )


def yaml_digest(path: str | Path) -> str:
    """sha256 of a YAML file's parsed content (keys sorted): the same for any comment, layout or
    key order, different for any change of a value."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"cannot read {path} ({exc})", file=str(path), expected="a YAML file"
        ) from None
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def site_by_id(config: dict[str, Any], site_id: str) -> dict[str, Any]:
    """The config entry of one site."""
    for site in config["sites"]:
        if site["id"] == site_id:
            return site
    raise ConfigError(f"no site {site_id!r}", file="config/config.yaml", field="sites[].id")


def demo_sites(config: dict[str, Any]) -> list[str]:
    """Ids of the sites whose registry is the demo registry built by the workflow."""
    demo = config.get("demo")
    if not demo:
        return []
    return [s["id"] for s in config["sites"] if s["registry"] == demo["registry"]]
