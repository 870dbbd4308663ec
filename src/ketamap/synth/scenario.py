"""Read and check a synthetic-consortium scenario file.

A scenario is YAML validated against ``schemas/scenario.schema.yaml`` (JSON Schema 2020-12). The
schema is the single description of what may be written: unknown keys fail (so a misspelling never
falls back to a default silently) and defaults live there, not in code. Problems are reported as
one :class:`~ketamap.errors.ConfigError` naming the file, the dotted field (``sites[0].scale``) and
what was expected, never as a jsonschema traceback.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError as JsonSchemaError
from jsonschema.exceptions import ValidationError

from ketamap.errors import ConfigError
from ketamap.paths import schema_dir

# Contract files this module reads (ketamap.codedeps adds them to the code input of the rules using it).
CONTRACTS = ("scenario.schema.yaml",)

SCHEMA_FILE = "scenario.schema.yaml"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML loader that keeps dates as text and refuses duplicate keys.

    Dates stay strings so the schema sees exactly what was written; a duplicate key would
    otherwise silently keep the last value.
    """


_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"key '{key}' appears twice in this mapping", key_node.start_mark
            )
        seen.add(key)
    return dict(loader.construct_mapping(node, deep=True))


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: Path) -> Any:
    """Parse a YAML file with :class:`_StrictLoader`, turning every failure into a ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", file=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the file ({exc})", file=path) from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid YAML{where}: {problem}", file=path) from None


def load_schema() -> dict[str, Any]:
    """Return the scenario schema from :func:`ketamap.paths.schema_dir`, checked as a schema."""
    path = schema_dir() / SCHEMA_FILE
    schema = read_yaml(path)
    try:
        Draft202012Validator.check_schema(schema)
    except JsonSchemaError as exc:
        raise ConfigError(
            f"the scenario schema itself is invalid: {exc.message}", file=path
        ) from None
    if not isinstance(schema, dict):
        raise ConfigError("the scenario schema is not a mapping", file=path)
    return schema


def read_scenario(path: str | Path) -> dict[str, Any]:
    """Read a scenario file, check it against the schema and complete it with the schema's
    defaults. What the modality generators check on top is in
    :func:`ketamap.synth.consortium.load_scenario`.

    Parameters
    ----------
    path
        The scenario YAML file.

    Returns
    -------
    dict
        The scenario with every default of the schema filled in, checked by the schema.

    Raises
    ------
    ConfigError
        For the first problem found, naming the file and the dotted field, e.g.
        ``field 'sites[0].sexstyle': unknown key 'sexstyle'; expected one of the keys ...``.
    """
    path = Path(path)
    raw = read_yaml(path)
    schema = load_schema()
    _raise_first(Draft202012Validator(schema).iter_errors(raw), raw, path)
    scenario = fill_defaults(raw, schema)
    # Defaults come from the schema and must satisfy it; a failure here is a schema bug.
    _raise_first(Draft202012Validator(schema).iter_errors(scenario), scenario, path)

    seen: dict[str, int] = {}
    for i, site in enumerate(scenario["sites"]):
        if site["id"] in seen:
            raise ConfigError(
                f"site id '{site['id']}' is used twice (also sites[{seen[site['id']]}])",
                file=path,
                field=f"sites[{i}].id",
                expected="a unique id per site",
            )
        seen[site["id"]] = i
    return scenario


# --------------------------------------------------------------------------- defaults


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """Merge a local ``$ref`` (``#/$defs/...``) into its sibling keywords."""
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    target: Any = root
    for part in ref[2:].split("/"):
        target = target[part]
    merged = dict(_resolve(target, root))
    merged.update({k: v for k, v in schema.items() if k != "$ref"})
    return merged


def fill_defaults(instance: Any, schema: dict[str, Any], root: dict[str, Any] | None = None) -> Any:
    """Return a copy of ``instance`` with the schema's ``default`` values filled in.

    Walks ``properties`` and ``items`` (following local ``$ref``); an absent property with a
    default gets a copy of it, which is then completed in turn (so ``age: {}`` gains the
    defaults of ``mean``, ``sd``, ...).
    """
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if isinstance(instance, dict):
        out = {key: copy.deepcopy(value) for key, value in instance.items()}
        for key, sub in schema.get("properties", {}).items():
            sub_resolved = _resolve(sub, root)
            if key not in out and "default" in sub_resolved:
                out[key] = copy.deepcopy(sub_resolved["default"])
            if key in out:
                out[key] = fill_defaults(out[key], sub, root)
        return out
    if isinstance(instance, list) and isinstance(schema.get("items"), dict):
        return [fill_defaults(item, schema["items"], root) for item in instance]
    return copy.deepcopy(instance)


# --------------------------------------------------------------------------- error messages


def _dotted(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _site_of(instance: Any, parts: list[Any]) -> str | None:
    if len(parts) >= 2 and parts[0] == "sites" and isinstance(parts[1], int):
        try:
            site_id = instance["sites"][parts[1]]["id"]
        except (KeyError, IndexError, TypeError):
            return None
        return site_id if isinstance(site_id, str) else None
    return None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _first_sentence(text: str) -> str:
    """The first sentence of a schema description, short enough for an error message."""
    text = " ".join(str(text).split())
    head, dot, _ = text.partition(". ")
    return head + "." if dot else text


def _priority(error: ValidationError) -> tuple[int, str]:
    rank = {"additionalProperties": 0, "required": 1}.get(str(error.validator), 2)
    return rank, _dotted(error.absolute_path)


def _raise_first(errors: Iterable[ValidationError], instance: Any, path: Path) -> None:
    """Raise a ConfigError for the most useful of ``errors`` (unknown keys first), if any."""
    ordered = sorted(errors, key=_priority)
    if not ordered:
        return
    error = ordered[0]
    parts = list(error.absolute_path)
    site = _site_of(instance, parts)
    more = f" (and {len(ordered) - 1} more problem(s) in this file)" if len(ordered) > 1 else ""
    schema = error.schema if isinstance(error.schema, dict) else {}
    described = f" ({_first_sentence(schema['description'])})" if "description" in schema else ""
    validator = error.validator
    value = error.instance
    expected: str | None
    hint: str | None = None

    if validator == "additionalProperties" and isinstance(value, dict):
        allowed = sorted(schema.get("properties", {}))
        extras = sorted(str(k) for k in value if k not in allowed)
        key = extras[0] if extras else "?"
        parts.append(key)
        problem = f"unknown key '{key}'"
        expected = "one of the keys " + ", ".join(allowed)
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean '{close[0]}'?" if close else None
    elif validator == "required" and isinstance(value, dict):
        missing = [k for k in schema.get("required", []) if k not in value]
        key = missing[0] if missing else "?"
        parts.append(key)
        sub = schema.get("properties", {}).get(key, {})
        problem = f"required key '{key}' is missing"
        expected = _first_sentence(sub.get("description", "")) or None
    elif validator == "type":
        problem = f"got {_show(value)}"
        expected = f"a value of type {error.validator_value}{described}"
    elif validator == "enum":
        problem = f"got {_show(value)}"
        expected = "one of " + ", ".join(repr(v) for v in list(error.validator_value))  # type: ignore[arg-type]
    else:
        constraint = {
            "minimum": f"a number >= {error.validator_value}",
            "maximum": f"a number <= {error.validator_value}",
            "exclusiveMinimum": f"a number > {error.validator_value}",
            "exclusiveMaximum": f"a number < {error.validator_value}",
            "pattern": f"text matching {error.validator_value}",
            "minItems": f"at least {error.validator_value} item(s)",
            "minProperties": f"at least {error.validator_value} key(s)",
            "minLength": f"at least {error.validator_value} character(s)",
        }.get(str(validator))
        problem = f"got {_show(value)}" if constraint else error.message
        expected = f"{constraint}{described}" if constraint else None
    raise ConfigError(
        problem + more,
        site=site,
        file=path,
        field=_dotted(parts) or None,
        expected=expected,
        hint=hint,
    )
