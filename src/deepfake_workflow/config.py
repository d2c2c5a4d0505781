"""Load and validate the workflow config against the JSON Schema shipped with the package.

The Snakefile and the stage programs both go through `validate_config`, so a bad value is
caught the same way whether the run is driven by Snakemake or by `dvc repro`.
"""
from __future__ import annotations

import copy
import difflib
import json
import numbers
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .errors import ConfigError

SCHEMA_FILE = "config.schema.yaml"


@lru_cache(maxsize=1)
def load_schema() -> dict:
    text = resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def expand_dotted_keys(raw: dict) -> dict:
    """Turn {'train.lr': 0.1} or {'train__lr': 0.1} into {'train': {'lr': 0.1}}, merged in.

    Lets users override one nested value on the command line. Snakemake's --config only
    accepts identifiers as keys, hence the `section__key=value` spelling there.

    A dotted key always wins over the nested section it points into, whatever the order the
    keys arrive in: Snakemake puts `--config` keys *before* the config file's sections, and
    the command line must win over every file.
    """
    out: dict = {}
    plain = [(k, v) for k, v in raw.items() if not _is_dotted(k)]
    dotted = [(k, v) for k, v in raw.items() if _is_dotted(k)]
    for key, value in plain + dotted:
        if isinstance(value, dict):
            value = expand_dotted_keys(value)
        parts = str(key).replace("__", ".").split(".")
        node = out
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        leaf = parts[-1]
        if isinstance(value, dict) and isinstance(node.get(leaf), dict):
            node[leaf] = deep_merge(node[leaf], value)
        else:
            node[leaf] = value
    return out


def _is_dotted(key) -> bool:
    return "." in str(key) or "__" in str(key)


def deep_merge(base: dict, update: dict) -> dict:
    """Recursive dict merge; values in `update` win. Neither input is modified."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _apply_defaults(schema: dict, instance: Any) -> Any:
    if not isinstance(instance, dict) or schema.get("type") != "object":
        return instance
    for name, sub in schema.get("properties", {}).items():
        if name not in instance and "default" in sub:
            instance[name] = copy.deepcopy(sub["default"])
        if name in instance:
            instance[name] = _apply_defaults(sub, instance[name])
    return instance


_TYPES = {"integer": int, "number": (int, float), "boolean": bool, "null": type(None)}


def _coerce_strings(schema: dict, instance: Any) -> Any:
    """Read strings as YAML where the schema wants a number, boolean or null.

    Snakemake's `--config 'train={lr: 0.01}'` delivers nested values as strings, and PyYAML
    reads `1e-3` as a string; both mean a number.
    """
    if isinstance(instance, dict):
        props = schema.get("properties", {})
        return {k: _coerce_strings(props.get(k, {}), v) for k, v in instance.items()}
    if isinstance(instance, list):
        return [_coerce_strings(schema.get("items", {}), v) for v in instance]
    types = schema.get("type")
    types = [types] if isinstance(types, str) else (types or [])
    if isinstance(instance, str) and "string" in types:
        # `--config model__pretrained=false` or `data__root=null`: the words, not a path named so
        word = instance.strip().lower()
        if "boolean" in types and word in ("true", "false"):
            return word == "true"
        if "null" in types and word in ("null", "~"):
            return None
        if {"integer", "number"} & set(types) and not re.fullmatch(schema.get("pattern", "(?!)"), instance):
            number = _coerce_strings({**schema, "type": [t for t in types if t != "string"]}, instance)
            if not isinstance(number, str):
                return number  # `predict={crops: 3}`: a number where a number or a word may stand
        return instance
    if isinstance(instance, str) and types:
        try:
            value = yaml.safe_load(instance)
            if isinstance(value, str):
                value = float(value)  # YAML 1.1 reads 1e-3 as a string
        except (yaml.YAMLError, ValueError):
            return instance
        for t in types:
            wanted = _TYPES.get(t)
            if wanted and isinstance(value, wanted) and not (t != "boolean" and isinstance(value, bool)):
                return int(value) if t == "integer" and float(value).is_integer() else value
    return instance


def _schema_at(schema: dict, path: list) -> dict:
    node = schema
    for part in path:
        if isinstance(part, int):
            node = node.get("items", {})
        else:
            node = node.get("properties", {}).get(part, {})
    return node


def _key_name(path) -> str:
    parts = [f"[{p}]" if isinstance(p, int) else str(p) for p in path]
    return ".".join(parts).replace(".[", "[") or "<top level>"


def _json_value(value: Any) -> Any:
    # numpy scalars (library calls) print as the number they hold, not as a quoted string
    return value.item() if hasattr(value, "item") else str(value)


def _describe(error: jsonschema.ValidationError, schema: dict, name: str | None = None) -> str:
    """One line per problem; `name` replaces "config key '<path>'" (arguments that are not config keys)."""
    path = list(error.absolute_path)
    key = _key_name(path)
    if error.validator == "additionalProperties":
        allowed = sorted(_schema_at(schema, path).get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        lines = []
        for name in unknown:
            full = _key_name(path + [name])
            close = difflib.get_close_matches(name, allowed, n=1)
            hint = f" (did you mean '{_key_name(path + [close[0]])}'?)" if close else ""
            lines.append(f"unknown config key '{full}'{hint}; allowed here: {', '.join(allowed)}")
        return "; ".join(lines)
    value = json.dumps(error.instance, default=_json_value)
    expected = {
        "enum": lambda: "one of " + ", ".join(json.dumps(v) for v in error.validator_value),
        "type": lambda: f"type {error.validator_value}",
        "minimum": lambda: f">= {error.validator_value}",
        "maximum": lambda: f"<= {error.validator_value}",
        "exclusiveMinimum": lambda: f"> {error.validator_value}",
        "exclusiveMaximum": lambda: f"< {error.validator_value}",
        "pattern": lambda: f"a string matching {error.validator_value}",
        "required": lambda: error.message,
        "minItems": lambda: f"at least {error.validator_value} items",
        "maxItems": lambda: f"at most {error.validator_value} items",
    }.get(error.validator, lambda: error.message)()
    label = name or f"config key '{key}'"
    return f"{label}: got {value}, expected {expected}"


def validate_config(raw: dict | None) -> dict:
    """Return a validated copy of `raw` with defaults filled in; ConfigError if invalid.

    Every problem is reported at once, each naming the key, the value and what was expected.
    """
    schema = load_schema()
    config = expand_dotted_keys(copy.deepcopy(raw or {}))
    # Defaults first (so nested objects exist), then validate the completed config.
    config = _apply_defaults(schema, config)
    config = _coerce_strings(schema, config)
    problems = [_describe(e, schema) for e in _errors(jsonschema.Draft202012Validator(schema), config)]
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    _check_cross_field(config)
    return config


def _errors(validator: jsonschema.protocols.Validator, instance: Any) -> list:
    return sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))


def _is_integer(checker, instance) -> bool:
    return isinstance(instance, numbers.Integral) and not isinstance(instance, bool)


def _is_number(checker, instance) -> bool:
    return isinstance(instance, numbers.Real) and not isinstance(instance, bool)


# For library calls: Python values, so 32.0 is no integer (it would break a shape or a range() later),
# while numpy integers are.
_StrictValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"integer": _is_integer, "number": _is_number}),
)


def check_values(values: dict, **arguments: Any) -> None:
    """Check a library call's settings with the schema's rules and messages; ConfigError if any is bad.

    `values` is a partial config, e.g. {"cache": {"size": size, "resize": resize}}: the rest takes the
    defaults and the cross-field rules run too, so a bad value gets the same line as in a config file.
    `arguments` are call arguments that are no config keys but have a rule in the schema's `$defs`
    (e.g. workers=2). Nothing is coerced and types are strict (see _StrictValidator). Every problem is
    reported at once.
    """
    schema = load_schema()
    config = _apply_defaults(schema, copy.deepcopy(values))
    problems = [_describe(e, schema) for e in _errors(_StrictValidator(schema), config)]
    for name, value in arguments.items():
        rule = schema["$defs"][name]
        problems += [_describe(e, schema, f"argument {name!r}") for e in _errors(_StrictValidator(rule), value)]
    if problems:
        raise ConfigError("invalid settings:\n  " + "\n  ".join(problems))
    _check_cross_field(config)


def _check_cross_field(config: dict) -> None:
    data = config["data"]
    if data["source"] == "local" and not data["root"] and not data["train_labels"]:
        raise ConfigError(
            "config key 'data.root': data.source is 'local' but no data.root is set; "
            "expected the folder that holds phase1/ (and optionally phase2/)"
        )
    if data["source"] == "url" and not data["urls"]:
        raise ConfigError("config key 'data.urls': data.source is 'url' but the list is empty")
    demo = data["demo"]
    if demo["min_size"] > demo["max_size"]:
        raise ConfigError(f"config key 'data.demo.min_size': got {demo['min_size']}, "
                          f"expected <= data.demo.max_size ({demo['max_size']})")
    lo, hi = config["train"]["augment"]["rrc_scale"]
    if lo > hi:
        raise ConfigError(f"config key 'train.augment.rrc_scale': got [{lo}, {hi}], expected min <= max")
    qlo, qhi = config["train"]["augment"]["jpeg_quality"]
    if qlo > qhi:
        raise ConfigError(f"config key 'train.augment.jpeg_quality': got [{qlo}, {qhi}], expected min <= max")
    train = config["train"]
    if train["batch_size"] % train["devices"] or train["batch_size"] // train["devices"] < 2:
        raise ConfigError(f"config key 'train.batch_size': got {train['batch_size']}, expected a multiple of "
                          f"train.devices ({train['devices']}) with at least 2 images per device (the global "
                          f"batch is shared by the devices; batch norm needs 2)")
    align, crop = train["crop_align"], train["crop_size"]
    if align > 1 and crop is not None and crop % align:
        raise ConfigError(f"config key 'train.crop_align': got {align}, but train.crop_size ({crop}) is not a "
                          f"multiple of it: crops on the grid must also end on it")
    report = config["report"]
    if report["threshold_policy"] in ("fpr", "fixed") and report["threshold_value"] is None:
        raise ConfigError(f"config key 'report.threshold_value': threshold_policy "
                          f"'{report['threshold_policy']}' needs a value in [0, 1]")


def schema_choices(key: str) -> tuple:
    """The allowed values of an enum config key (e.g. "cache.resize"), from the schema."""
    node = load_schema()
    for part in key.split("."):
        node = node["properties"][part]
    return tuple(node["enum"])


def section_defaults(name: str) -> dict:
    """The schema defaults of one config section (the library's single source of defaults)."""
    return validate_config({})[name]


def validate_section(name: str, values: dict | None) -> dict:
    """One section validated against the schema, defaults filled in (library entry points)."""
    return validate_config({name: copy.deepcopy(values or {})})[name]


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> dict:
    """Read a YAML config file (or none: all defaults), apply overrides, validate."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path}: expected a mapping at the top level")
    if overrides:
        raw = deep_merge(expand_dotted_keys(raw), expand_dotted_keys(overrides))
    try:
        return validate_config(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path or 'config'}: {exc}") from None


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one `key.path=value` override; the value is read as YAML (numbers, bools, lists)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected key=value, e.g. train.lr=1.0e-3")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)
