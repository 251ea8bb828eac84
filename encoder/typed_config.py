"""The project-wide config machinery: frozen dataclasses built from YAML mappings and validated once, at the edge.

Every job has one dataclass tree. ``build`` turns a plain mapping into it, rejecting unknown keys and values of the
wrong type with an error that names the file, the dotted key, the value found and what is allowed. The same builder
reads configs back from JSON artifacts (``head.json``), so a saved config is validated exactly like a written one.
"""
from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, TypeVar, Union, get_args, get_origin

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or outside what is allowed."""

    def __init__(self, source: str, key: str, message: str):
        self.source, self.key = source, key
        super().__init__(f"{source}: {key} {message}")


def choice_error(source: str, key: str, value: Any, allowed: tuple) -> ConfigError:
    """The one wording for 'value not among the allowed ones'."""
    return ConfigError(source, key, f"= {value!r}; expected one of {', '.join(repr(a) for a in allowed)}")


def first_line(exc: BaseException) -> str:
    """An exception's first non-empty line (library and engine messages often span lines: errors here are one)."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def require_at_least(obj: Any, keys: tuple[str, ...] | list[str], low: float, source: str, prefix: str) -> None:
    """The one lower-bound check of a config: every named field >= ``low``, else a ConfigError naming the key."""
    for key in keys:
        value = getattr(obj, key)
        if value < low:
            raise ConfigError(source, f"{prefix}{key}", f"= {value}; expected >= {low}")


class _Loader(yaml.SafeLoader):
    """The safe loader with YAML 1.2 booleans: only true/false are booleans, so label names such as NOT, OFF, yes
    and no stay strings (YAML 1.1 would read them as booleans)."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


MAX_YAML_NODES = 100_000
"""The most values one YAML document may build, an alias counted each time it is used. A config holds a few
hundred; nine aliases of nine aliases, eight levels deep (an "anchor bomb"), would be 43 million."""


def load_yaml(text: str, source: str = "(yaml)"):
    """Parse YAML text with the project's safe loader (no Python object tags, YAML 1.2 booleans). A key given twice
    in one mapping and a document that expands past ``MAX_YAML_NODES`` values are a ConfigError naming the key;
    nothing is built before both are checked."""
    loader = _Loader(text)   # a SafeLoader: what yaml.safe_load does, with the booleans above
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_document(node, source)
        return loader.construct_document(node)
    except RecursionError:
        raise ConfigError(source, "(file)", "nests too deeply to be a config") from None
    finally:
        loader.dispose()


def _check_document(root: yaml.Node, source: str) -> None:
    """Walk the composed document as it would be built (aliases expanded), without building it: every mapping's
    keys once each (a merge key ``<<`` may be overridden, as YAML allows), at most ``MAX_YAML_NODES`` values."""
    count = 0
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        count += 1
        if count > MAX_YAML_NODES:
            raise ConfigError(source, path or "(top level)", f"expands to more than {MAX_YAML_NODES:,} values (an "
                              "alias counted each time it is used); refusing to build it")
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, str], int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    stack.append((value_node, path))
                    continue
                name = key_node.value if isinstance(key_node, yaml.ScalarNode) else "(complex key)"
                child = f"{path}.{name}" if path else str(name)
                if isinstance(key_node, yaml.ScalarNode):
                    line, ident = key_node.start_mark.line + 1, (key_node.tag, key_node.value)
                    if ident in seen:
                        raise ConfigError(source, child, f"is given twice (line {seen[ident]} and line {line}); "
                                          "write each key once")
                    seen[ident] = line
                stack.append((key_node, child))
                stack.append((value_node, child))


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error as one line: what is wrong and where (PyYAML's own text spans lines, with a snippet)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        what = "; ".join(p for p in (exc.context, exc.problem) if p)
        mark = exc.problem_mark or exc.context_mark
        return f"{what} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else what
    return " ".join(str(exc).split())


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping with the safe loader (no Python object tags)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(str(p), "(file)", "does not exist")
    try:
        data = load_yaml(p.read_text(encoding="utf-8"), str(p))
    except yaml.YAMLError as exc:
        raise ConfigError(str(p), "(file)", f"is not valid YAML: {_yaml_problem(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(p), "(file)", f"must hold a mapping at the top level, got {type(data).__name__}")
    return data


def apply_overrides(data: dict, overrides: list[str], source: str = "--set") -> dict:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML, so numbers and lists work) to a nested mapping."""
    out = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(source, item, "must look like key.path=value")
        key, raw = item.split("=", 1)
        try:
            value = load_yaml(raw, f"{source} (--set {key.strip()})")
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(source, key, f"cannot set below {part!r}, which is not a mapping")
            node = nxt
        node[parts[-1]] = value
    return out


INLINE = "inline"
"""Field metadata: the field is a dataclass whose keys are written at the parent's level (``field(metadata=
{INLINE: True})``), so a type embedded in several configs keeps their YAML flat."""


def flat_keys(cls: type) -> tuple[str, ...]:
    """The YAML keys of ``cls`` at its own level, with inline fields expanded."""
    hints = typing.get_type_hints(cls)
    out: list[str] = []
    for f in dataclasses.fields(cls):
        out += flat_keys(hints[f.name]) if f.metadata.get(INLINE) else [f.name]
    return tuple(out)


def build(cls: type[T], data: Mapping[str, Any] | None, source: str, prefix: str = "") -> T:
    """Build the frozen dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError."""
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise ConfigError(source, prefix or "(top level)", f"must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    inline = {name: hints[name] for name, f in fields.items() if f.metadata.get(INLINE)}
    known = set(fields) - set(inline) | {k for tp in inline.values() for k in flat_keys(tp)}
    unknown = sorted(set(data) - known)
    if unknown:
        key = f"{prefix}{unknown[0]}"
        raise ConfigError(source, key, f"is not a known key; expected one of {', '.join(sorted(known))}")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}{name}"
        if name in inline:      # an embedded settings type whose keys sit at this level (same YAML as before)
            kwargs[name] = build(inline[name], {k: v for k, v in data.items() if k in flat_keys(inline[name])},
                                 source, prefix)
            continue
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(source, key, "is required")
            continue
        kwargs[name] = _coerce(hints[name], data[name], source, key)
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        check(source, prefix)
    return obj


def to_data(obj: Any) -> Any:
    """The inverse of ``build``: a config dataclass -> plain data (inline fields flattened, tuples as lists), which
    ``build`` reads back to an equal config."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            value = to_data(getattr(obj, f.name))
            if f.metadata.get(INLINE):
                out.update(value)
            else:
                out[f.name] = value
        return out
    if isinstance(obj, (list, tuple)):
        return [to_data(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_data(v) for k, v in obj.items()}
    return obj


def _coerce(tp: Any, value: Any, source: str, key: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, source, prefix=f"{key}.")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise choice_error(source, key, value, allowed)
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        choices = [a for a in args if a is not type(None)]
        if len(choices) == 1:          # Optional[X]: X's own error (a nested config's names its own key, once)
            return _coerce(choices[0], value, source, key)
        if all(a is bool or get_origin(a) is Literal for a in choices):   # e.g. bool | Literal["auto"]: one list
            if isinstance(value, bool) and bool in choices or any(
                    not isinstance(value, bool) and value in get_args(a) for a in choices if a is not bool):
                return value
            words = [w for a in choices for w in (("true", "false") if a is bool else map(repr, get_args(a)))]
            raise ConfigError(source, key, f"= {value!r}; expected one of {', '.join(words)}")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, source, key)
            except ConfigError as exc:
                errors.append(str(exc).split(f"{key} ", 1)[-1])
        raise ConfigError(source, key, " or ".join(errors))
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(source, key, f"= {value!r}; expected a list")
        (inner, *_rest) = get_args(tp) or (Any,)
        return tuple(_coerce(inner, v, source, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(source, key, f"= {value!r}; expected a mapping")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, key, f"= {value!r}; expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, key, f"= {value!r}; expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(source, key, f"= {value!r}; expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(source, key, f"= {value!r}; expected a string")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {key}")
