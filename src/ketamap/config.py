"""The workflow configuration: its one source of defaults, and the checks beyond its schema.

``schemas/config.schema.yaml`` is the only place a default is written. :func:`validate_config`
(called by the Snakefile at parse time, and by the tests) checks a config against it and fills every
default in; :func:`with_defaults` does the same for one section, for code that is called without
the workflow (the readers' and analyses' functions, the tests). :func:`check_config` adds the
checks a schema cannot express (unique site ids, a demo registry the sites actually point at).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.resources
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ketamap.errors import ConfigError
from ketamap.paths import schema_dir

# Options that moved out of the modality sections (issue 11): only one analysis reads each.
MOVED = {
    ("pet", "response_prediction"): "analyses.pet.response_prediction",
    ("ieeg", "equivalence_margin_s"): "analyses.ieeg.fast_phase_latency.equivalence_margin_s",
    ("behaviour", "equivalence_margin"): "analyses.behaviour.reflex_blink.equivalence_margin",
    (
        "behaviour",
        "similarity_window_s",
    ): "analyses.cross_species.timing_signature.similarity_window_s",
    ("behaviour", "bootstrap"): "analyses.cross_species.timing_signature.bootstrap",
}


# What each pooled analysis reads of the config besides its own ``analyses.<name>`` section (dotted
# key paths): a shared definition, or the measurement options it states in every row's ``method``.
# The workflow gives each analysis exactly these (and its section) as params, so editing a key
# reruns the analyses listed here and no other; tests/test_workflow.py checks it key by key.
_IEEG_MEASURED = ("ieeg.threshold_z", "ieeg.min_duration_s", "ieeg.band_hz", "ieeg.reference")
_EYELID_MEASURED = (
    "behaviour.reflex_window_s",
    "behaviour.sustained_window_s",
    "behaviour.likelihood_cutoff",
)
READS: dict[str, tuple[str, ...]] = {
    "clinical.madrs_change": ("clinical.response_fraction", "clinical.remission_threshold"),
    "pet.baseline_trd_vs_hc": (),
    "pet.ketamine_x_time": (),
    "pet.change_vs_improvement": (),
    "pet.response_prediction": ("clinical.response_fraction",),
    "ieeg.slow_phase_duration": _IEEG_MEASURED,
    "ieeg.fast_phase_latency": _IEEG_MEASURED,
    "ieeg.synchrony": _IEEG_MEASURED,
    "behaviour.reflex_blink": _EYELID_MEASURED,
    "behaviour.sustained_closure": _EYELID_MEASURED,
    "mouse.reward_seeking_after_train": (),
    "cross_species.timing_signature": (*_EYELID_MEASURED, "seed"),
}


def analysis_options(config: dict[str, Any], analysis: str) -> dict[str, Any]:
    """What one pooled analysis reads of a (validated, default-filled) config: its own section as
    ``analysis`` and each key of :data:`READS` by its dotted path."""
    options: dict[str, Any] = {"analysis": config.get("analyses", {}).get(analysis, {})}
    for dotted in READS[analysis]:
        value: Any = config
        for part in dotted.split("."):
            value = value[part]
        options[dotted] = value
    return options


@functools.cache
def config_schema() -> dict[str, Any]:
    """``config.schema.yaml``, as installed with the package."""
    schema: dict[str, Any] = yaml.safe_load(
        (schema_dir() / "config.schema.yaml").read_text(encoding="utf-8")
    )
    return schema


def _filling(validator_class: Any) -> Any:
    """A validator that also writes each missing property's schema default into the instance
    (the jsonschema FAQ's recipe, which snakemake.utils.validate uses too)."""
    check_properties = validator_class.VALIDATORS["properties"]

    def properties(validator: Any, props: dict[str, Any], instance: Any, schema: Any) -> Any:
        if isinstance(instance, dict):
            for name, sub in props.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from check_properties(validator, props, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": properties})


_FillingValidator = _filling(jsonschema.Draft202012Validator)


def _validate(instance: Any, schema: dict[str, Any], prefix: str) -> None:
    errors = sorted(_FillingValidator(schema).iter_errors(instance), key=lambda e: list(e.path))
    if errors:
        error = errors[0]
        path = [str(p) for p in error.absolute_path]
        where = ".".join(p for p in [prefix, *path] if p)
        name = path[-1] if path else (prefix.rsplit(".", 1)[-1] or "config")
        if error.validator == "additionalProperties":
            message = f"unknown key in {where or 'the config'} ({error.message})"
        elif error.validator == "required":
            message = error.message
        else:
            message = f"{name} {error.instance!r}"
        raise ConfigError(
            message,
            file="config/config.yaml",
            field=where or "(top level)",
            expected=_expectation(error),
        )


def _expectation(error: jsonschema.ValidationError) -> str:
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "enum":  # jsonschema's own words too: what users search for
        return f"one of {list(error.validator_value)} ({error.message})"
    if error.validator == "additionalProperties":
        return f"only the keys {sorted(schema.get('properties', {}))}"
    described = str(schema.get("description", "")).strip()
    rule = error.message.replace(repr(error.instance), "it", 1)
    return f"{described} ({rule})" if described else rule


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Check ``config`` against ``config.schema.yaml`` and fill in every default, in place.

    A key that moved to the ``analyses`` section is named with its new place.
    """
    for (section, key), new in MOVED.items():
        if key in (config.get(section) or {}):
            raise ConfigError(
                f"{section}.{key} has moved: only one pooled analysis reads it",
                file="config/config.yaml",
                field=f"{section}.{key}",
                expected=new,
                hint=f"move it to {new}",
            )
    _validate(config, config_schema(), "")
    return config


def section_schema(*path: str) -> dict[str, Any]:
    """The schema of one config section, e.g. ``("ieeg",)`` or ``("analyses", "pet.response_prediction")``."""
    schema = config_schema()
    for key in path:
        schema = schema["properties"][key]
    return schema


def with_defaults(options: dict[str, Any] | None, *path: str) -> dict[str, Any]:
    """A copy of one section's ``options`` with the schema's defaults filled in, checked against
    the schema; what a function called without the workflow (a test, a notebook) starts from."""
    filled = copy.deepcopy(dict(options or {}))
    _validate(filled, section_schema(*path), ".".join(path))
    return filled


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
