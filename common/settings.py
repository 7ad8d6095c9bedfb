"""One way to declare settings: typed dataclass fields with a default, help and a range.

Every settings object of the project (the training config's sections, the simulator,
the item index, the retrieval service, export options, the benchmarks) is a dataclass
that subclasses `Settings` and declares each field with `setting(...)`. From that one
declaration come:
  - validation on construction (type, `min`/`max`, `choices`, then the class's own
    cross-field `check()`), with a `ConfigError` that names the key at fault;
  - `from_dict` for YAML/JSON files (nested sections, unknown keys refused);
  - `add_flags` / `from_flags`: the command line's `--flags`, their help and defaults;
  - `describe`: the `key=default  help [choices]` listing of `--help` epilogs.

Why not pydantic (which the retrieval service uses for its request schema): settings
objects are passed down into Keras layers, Beam DoFns and worker processes, where frozen
stdlib dataclasses pickle, compare and `dataclasses.replace` without a dependency; the
checker below is all that validation needs.
"""

import argparse
import contextlib
import dataclasses
import json
import types
import typing
from collections.abc import Iterator, Sequence
from typing import Any

import yaml


class ConfigError(ValueError):
    """A setting is invalid; the message names the key (or flag) at fault.

    Attributes:
      key: the setting's key, e.g. "training.batch_size" (may be empty).
      detail: what is wrong with it.
    """

    def __init__(self, detail: str, key: str = ""):
        super().__init__(f"{key}: {detail}" if key else detail)
        self.key = key
        self.detail = detail

    def renamed(self, key: str) -> "ConfigError":
        """The same error, naming `key` instead (a section prefix, a flag)."""
        return ConfigError(self.detail, key)


def setting(
    default: Any,
    help: str,
    *,
    min: float | None = None,
    max: float | None = None,
    choices: Sequence[Any] | None = None,
    repeat: bool = False,
) -> Any:
    """A settings field: its default, a one-line help and the values it may take.

    `repeat`: a list of strings given as a repeated flag (`--x a --x b`) rather than one
    comma-separated value, for values that hold commas themselves (Beam flags).
    """
    metadata: dict[str, Any] = {"help": help, "repeat": repeat}
    if min is not None:
        metadata["min"] = min
    if max is not None:
        metadata["max"] = max
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if isinstance(default, list | dict):
        factory = (lambda: list(default)) if isinstance(default, list) else (lambda: dict(default))
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class Settings:
    """Base of every settings dataclass: validates its fields on construction.

    Subclasses add cross-field rules in `check()`, raising `ConfigError(detail, key)`.
    """

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            hint = hints[field.name]
            value = getattr(self, field.name)
            if _is_settings(hint):
                if not isinstance(value, hint):
                    raise ConfigError(f"expected a {hint.__name__}, got {value!r}", field.name)
                continue
            converted = _convert(field.name, value, hint, field.metadata)
            if converted is not value:
                object.__setattr__(self, field.name, converted)  # frozen dataclasses too
        self.check()

    def check(self) -> None:
        """Cross-field rules; none by default."""


def _is_settings(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint) and issubclass(hint, Settings)


def _optional(hint: Any) -> tuple[Any, bool]:
    """(the hint without None, whether None is allowed)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], len(args) < len(typing.get_args(hint))
    return hint, False


def _convert(key: str, value: Any, hint: Any, meta: dict[str, Any]) -> Any:
    """`value` checked against `hint` and `meta` (ints become floats where floats belong)."""
    hint, nullable = _optional(hint)
    if value is None and nullable:
        return None
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"expected a list, got {type(value).__name__} {value!r}", key)
        item_hint = typing.get_args(hint)[0]
        items = [_convert(f"{key}[{i}]", v, item_hint, meta) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"expected true or false, got {value!r}", key)
    elif hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"expected an integer, got {value!r}", key)
    elif hint is float:
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"expected a number, got {value!r}", key)
        if not isinstance(value, float):
            value = float(value)
        if value != value:  # NaN passes every range check below
            raise ConfigError("expected a number, got nan", key)
    elif hint is str and not isinstance(value, str):
        raise ConfigError(f"expected a string, got {value!r}", key)
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{value!r} is not one of {', '.join(map(str, meta['choices']))}", key)
    if "min" in meta and value < meta["min"]:
        raise ConfigError(f"{value!r} is below the minimum {meta['min']}", key)
    if "max" in meta and value > meta["max"]:
        raise ConfigError(f"{value!r} is above the maximum {meta['max']}", key)
    return value


def from_dict(cls: type, values: Any, prefix: str = "") -> Any:
    """Builds and validates a settings dataclass (and its nested sections) from a dict.

    Raises:
      ConfigError: a value that is not a mapping, an unknown key, or an invalid value;
        the key is given in full ("negatives.queue_size").
    """
    if not isinstance(values, dict):
        raise ConfigError(f"expected a mapping, got {values!r}", prefix.rstrip(".") or "config")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"unknown key (known: {', '.join(sorted(names))})", prefix + unknown[0])
    kwargs = {}
    for name, value in values.items():
        if _is_settings(hints[name]):
            kwargs[name] = from_dict(hints[name], value, f"{prefix}{name}.")
        else:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise e.renamed(prefix + e.key) if e.key else e from None


def _defaults(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _leaves(cls: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if _is_settings(hints[field.name]):
            yield from _leaves(hints[field.name], f"{prefix}{field.name}.")
        else:
            yield prefix + field.name, field, hints[field.name]


def _shown(value: Any) -> str:
    return json.dumps(_plain(value))  # JSON is YAML, so --set takes it back as written


def describe(cls: type, title: str = "settings", prefix: str = "") -> str:
    """Every key of `cls` with its default, help, range and choices, one a line."""
    lines = [f"{title} (defaults shown):"]
    section = None
    for key, field, _ in _leaves(cls, prefix):
        head = key.rpartition(".")[0]
        if head != section and head:
            lines.append(f"  {head}:")
            section = head
        lines.append(f"    {key}={_shown(_defaults(field))}  {_constraints(field)}")
    return "\n".join(lines)


def _constraints(field: dataclasses.Field) -> str:
    meta = field.metadata
    text = meta["help"]
    if "choices" in meta:
        text += f" [{'|'.join(map(str, meta['choices']))}]"
    bounds = [f"{sign} {meta[key]}" for key, sign in (("min", ">="), ("max", "<=")) if key in meta]
    if bounds:
        text += f" ({', '.join(bounds)})"
    return text


def flag_name(name: str, prefix: str = "") -> str:
    """The command-line flag of a field: `num_items` -> `--num-items`."""
    return f"--{prefix}{name}".replace("_", "-")


def _flag_dest(name: str, prefix: str) -> str:
    return f"{prefix}{name}".replace("-", "_")


def parse_value(text: str, hint: Any) -> Any:
    """A flag's or `--set`'s text as the value `hint` wants: strings stay as written;
    numbers, booleans and lists ("1,2,3" or "[1, 2, 3]") are parsed as YAML."""
    hint, nullable = _optional(hint)
    if nullable and text.lower() in ("none", "null"):
        return None
    if hint is str:
        return text
    if typing.get_origin(hint) in (list, tuple):
        item = typing.get_args(hint)[0]
        text = text.strip()
        if text.startswith("["):
            parsed = yaml.safe_load(text)
            if item is str and isinstance(parsed, list):
                return [str(v) for v in parsed]
            return parsed
        return [parse_value(part.strip(), item) for part in text.split(",") if part.strip()]
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def add_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    prefix: str = "",
    skip: Sequence[str] = (),
) -> None:
    """Adds one `--flag` per field of `cls` (nested sections excluded), help from the
    declaration; unset flags stay None so that the declared default applies."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip or _is_settings(hints[field.name]):
            continue
        hint, _ = _optional(hints[field.name])
        options: dict[str, Any] = {
            "dest": _flag_dest(field.name, prefix),
            "default": None,
            "help": f"{_constraints(field)} (default: {_shown(_defaults(field))})".replace(
                "%", "%%"
            ),
        }
        if hint is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif field.metadata.get("repeat"):
            options.update(action="append", metavar="VALUE")
        else:
            lists = typing.get_origin(hint) in (list, tuple)
            options["metavar"] = "A,B,..." if lists else field.name.upper()
        parser.add_argument(flag_name(field.name, prefix), **options)


def from_flags(cls: type, args: argparse.Namespace, *, prefix: str = "", base: Any = None) -> Any:
    """`base` (default: the declared defaults) with every flag of `add_flags` that was
    given applied.

    Raises:
      ConfigError: an invalid value, naming the flag.
    """
    hints = typing.get_type_hints(cls)
    changes = {}
    for field in dataclasses.fields(cls):
        raw = getattr(args, _flag_dest(field.name, prefix), None)
        if raw is None or _is_settings(hints[field.name]):
            continue
        # A repeated string flag arrives as a list already.
        changes[field.name] = parse_value(raw, hints[field.name]) if isinstance(raw, str) else raw
    try:
        return cls(**changes) if base is None else dataclasses.replace(base, **changes)
    except ConfigError as e:
        raise e.renamed(flag_name(e.key.split("[")[0], prefix)) if e.key else e from None


def to_dict(settings: Any) -> dict[str, Any]:
    """Plain data (lists, not tuples) for JSON and YAML."""
    return _plain(dataclasses.asdict(settings))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
