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
import json
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ketamap import yamlio
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


@functools.cache
def config_schema() -> dict[str, Any]:
    """``config.schema.yaml``, as installed with the package."""
    schema: dict[str, Any] = yamlio.safe_load(
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
        return f"one of {list(schema.get('enum', []))} ({error.message})"
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
    """The schema of one config section, e.g. ``("ieeg",)``, ``("analyses", "pet.response_prediction")``
    or ``("sites", "reader")`` (a site's reader options)."""
    schema = config_schema()
    for key in path:
        if "properties" not in schema and "items" in schema:  # a list: the schema of its items
            schema = schema["items"]
        schema = schema["properties"][key]
    return schema


def with_defaults(options: dict[str, Any] | None, *path: str) -> dict[str, Any]:
    """A copy of one section's ``options`` with the schema's defaults filled in, checked against
    the schema; what a function called without the workflow (a test, a notebook) starts from."""
    filled = copy.deepcopy(dict(options or {}))
    _validate(filled, section_schema(*path), ".".join(path))
    return filled


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


_SITE_INDEX: dict[int, dict[str, int]] = {}


def site_by_id(config: dict[str, Any], site_id: str) -> dict[str, Any]:
    """The config entry of one site (indexed: planning asks once or twice per job)."""
    sites = config["sites"]
    index = _SITE_INDEX.get(id(sites))
    if index is None or len(index) != len(sites):
        index = _SITE_INDEX[id(sites)] = {site["id"]: i for i, site in enumerate(sites)}
    i = index.get(site_id)
    if i is not None and i < len(sites) and sites[i]["id"] == site_id:
        return sites[i]
    for site in sites:  # the list was edited since it was indexed
        if site["id"] == site_id:
            _SITE_INDEX.pop(id(sites), None)
            return site
    raise ConfigError(f"no site {site_id!r}", file="config/config.yaml", field="sites[].id")


def demo_sites(config: dict[str, Any]) -> list[str]:
    """Ids of the sites whose registry is the demo registry built by the workflow."""
    demo = config.get("demo")
    if not demo:
        return []
    return [s["id"] for s in config["sites"] if s["registry"] == demo["registry"]]
