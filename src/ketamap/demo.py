"""The demo consortium's side of the config: deriving the demo sites from the scenario.

``make run SCENARIO=...`` takes the site list and the options the scenario's ground truth assumes
from the scenario; a config that lists the demo sites must agree with it. Deriving them needs the
generators (:mod:`ketamap.synth`); :func:`demo_derivation` caches the result, so a parse of the
workflow imports none of them. Only the workflow's parse uses this module, never a step.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
from pathlib import Path
from typing import Any

from ketamap.config import with_defaults, yaml_digest
from ketamap.errors import ConfigError
from ketamap.paths import schema_dir


def resolve_demo_sites(config: dict[str, Any], cache: str | Path | None = None) -> None:
    """Make the demo sites agree with the demo scenario.

    With ``demo.derive_sites`` the site list is taken from the scenario (what ``make run
    SCENARIO=...`` does); otherwise every listed demo site must read the way the scenario writes
    it, or the run stops naming the site and the fix. ``cache``: see :func:`demo_derivation`.
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
    expected, options = demo_derivation(
        demo["scenario"], demo["registry"], str(demo["release"]), cache=cache
    )
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


def demo_derivation(
    scenario: str | Path, registry: str, release: str, cache: str | Path | None = None
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The site entries and analysis options a demo scenario gives (``synth.site_configs`` and
    ``synth.analysis_options``).

    Deriving them imports the generators (numpy, scipy, nibabel: about 2 s), which every parse of
    the workflow would pay, on every SLURM job too. With ``cache`` (a folder) the result is kept
    as JSON under a key of everything it depends on: the scenario's parsed content, the registry
    and release, and the bytes of the generator code and the scenario schema. A parse that finds
    its key there imports nothing of ``ketamap.synth``.
    """
    key = hashlib.sha256(
        "\0".join((yaml_digest(scenario), registry, release, _synth_code_digest())).encode()
    ).hexdigest()[:20]
    path = Path(cache) / f"demo-sites-{key}.json" if cache is not None else None
    if path is not None and path.is_file():
        try:
            kept = json.loads(path.read_text(encoding="utf-8"))
            return kept["sites"], kept["options"]
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry is derived again and rewritten
    from ketamap import synth

    loaded = synth.load_scenario(scenario)
    sites = synth.site_configs(loaded, registry, release)
    options = synth.analysis_options(loaded)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps({"sites": sites, "options": options}, sort_keys=True))
        os.replace(tmp, path)
    return sites, options


def _synth_code_digest() -> str:
    """sha256 over the generator package's source files and the scenario schema (read as bytes,
    not imported)."""
    digest = hashlib.sha256()
    package = importlib.resources.files("ketamap") / "synth"  # files("ketamap.synth") imports it
    for name in sorted(f.name for f in package.iterdir() if f.name.endswith(".py")):
        digest.update(name.encode() + b"\0" + package.joinpath(name).read_bytes())
    digest.update((schema_dir() / "scenario.schema.yaml").read_bytes())
    return digest.hexdigest()


def apply_analysis_options(config: dict[str, Any], options: dict[str, dict[str, Any]]) -> None:
    """Give the config the options the scenario's ground truth assumes (``make run SCENARIO=...``).

    The scenario's values win: its truths were computed with them. Pre-specified prediction regions
    are a list: the scenario's planted predictor is added to the configured ones.
    """
    for section, values in options.items():
        target = config.setdefault(section, {})
        for key, value in values.items():
            if (section, key) == ("analyses", "pet.response_prediction"):
                spec = target.setdefault(key, {})
                regions = list(with_defaults(spec, section, key)["regions"])
                spec["regions"] = regions + [r for r in value["regions"] if r not in regions]
            else:
                target[key] = value


def check_analysis_options(
    config: dict[str, Any], options: dict[str, dict[str, Any]], scenario: str
) -> None:
    """A config that lists the demo sites must use the options the demo scenario's truths assume."""
    for section, values in options.items():
        for key, want in values.items():
            if (section, key) == ("analyses", "pet.response_prediction"):
                continue  # a choice of hypotheses, not a rule of the truth
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
