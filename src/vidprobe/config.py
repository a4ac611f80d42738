"""One config schema language, one loader, one error type (layer 0: imports nothing from vidprobe).

A config is a tree of dataclasses (the schema). :func:`load` builds one from a mapping (a YAML file
read with :func:`read_yaml`, a dict) plus ``--set dotted.key=value`` overrides:

- every key is checked against the schema: an unknown one raises :class:`ConfigError` naming its dotted
  path and the closest known key (``unknown key 'optim.lrr' (did you mean 'lr'?)``);
- every value is checked and coerced against its field's annotation: ``int``, ``float`` (an int or a
  numeric string too: YAML reads ``3e-4`` as a string), ``bool`` (true/false only), ``str``, ``X | None``,
  unions (a value already of one member's type is kept as it is), ``Literal[...]``, ``tuple[X, Y]``,
  ``tuple[X, ...]``, ``list[X]``, ``dict[str, X]``, ``Any``, nested dataclasses and :class:`Overrides`;
  a field's ``metadata={"choices": (...)}`` restricts it to those values;
- a field without a default must be given; absent fields keep their defaults, so ``__post_init__``
  can resolve defaults that depend on other fields;
- a dataclass with ``__config_shorthand__ = "name"`` also reads a bare scalar ``x`` as ``{name: x}``.

:class:`Overrides` is a typed *partial* section: a ``dict`` holding only the keys that were given, each
checked and coerced against a schema's field types at load (and on every later assignment). A section
whose values overlay something resolved later (the probe over its preset and the mode, the loss over the
mode, a sweep's training base under each cell) is an ``Overrides`` subclass, so that what is recorded
(``config.yaml``, the sweep's hash) is what was given, never a filled-in copy. Numbers in an ``Overrides``
stay as written (an int in a float field stays an int); a dataclass field holds its declared type.

:func:`to_plain` turns a loaded config back into plain dicts, lists and scalars (tuples as lists), for YAML
and JSON.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, Union

import yaml

__all__ = ["UNSET", "ConfigError", "Overrides", "Sentinel", "apply_overrides", "choices", "coerce", "load", "read_yaml",
           "set_by_path", "to_plain"]


class ConfigError(ValueError):
    """A config key or value is invalid; ``path`` is its dotted key (``'train.optim.lr'``), ``''`` if none."""

    def __init__(self, message: str, path: str = ""):
        super().__init__(message)
        self.path = path


class Sentinel:
    """A named singleton default (:data:`UNSET`, the training config's ``FROM_MODE``, the probe's ``KEEP``).

    ``Sentinel(name)`` always returns the same object, and so do its copies and pickles, so ``is`` tests hold.
    """

    _made: ClassVar[dict[str, Sentinel]] = {}
    name: str
    text: str

    def __new__(cls, name: str, text: str | None = None):
        if name not in cls._made:
            obj = super().__new__(cls)
            obj.name, obj.text = name, text or f"<{name}>"
            cls._made[name] = obj
        return cls._made[name]

    def __repr__(self) -> str:
        return self.text

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        return (Sentinel, (self.name, self.text))


#: Default of a field whose value, when not given, is decided later (e.g. from another section).
UNSET: Any = Sentinel("unset")


def choices(values) -> dict[str, tuple]:
    """Field metadata restricting a field to ``values``: ``field(default=..., metadata=choices(MODES))``."""
    return {"choices": tuple(values)}


# ------------------------------------------------------------------------------------------ errors
def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _field_error(path: str, text: str) -> ConfigError:
    return ConfigError(f"config field {path!r}: {text}", path)


def unknown_key(path: str, key: object, known) -> ConfigError:
    """``unknown key 'a.b' (did you mean 'c'?)``, or the list of known keys when none is close."""
    full = _join(path, key)
    known = sorted(known)
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(known)}"
    return ConfigError(f"unknown key {full!r}{hint}", full)


def _describe(tp: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if tp in names:
        return names[tp]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return f"one of {args}"
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None))
    if origin is tuple:
        return "a list" if len(args) == 2 and args[1] is Ellipsis else f"a list of {len(args)} values"
    if origin is list:
        return "a list"
    if origin in (dict, Mapping) or _is_section(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


# ------------------------------------------------------------------------------------------ coercion
@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and (dataclasses.is_dataclass(tp) or issubclass(tp, Overrides))


def _scalar(tp: type, value: Any, path: str, keep: bool) -> Any:
    if tp is bool:
        if not isinstance(value, bool):
            raise _field_error(path, f"expected true or false, got {value!r}")
        return value
    if isinstance(value, bool) or (tp is not str and not isinstance(value, (int, float, str))):
        raise _field_error(path, f"expected {_describe(tp)}, got {value!r}")
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise _field_error(path, f"expected a string, got {value!r}")
        return str(value)
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise _field_error(path, f"expected {_describe(tp)}, got {value!r}") from None
    if tp is int:
        if not f.is_integer():
            raise _field_error(path, f"expected an integer, got {value!r}")
        return value if keep and isinstance(value, int) else int(f)
    return value if keep and isinstance(value, (int, float)) else f


def _sequence(tp: Any, value: Any, path: str, keep: bool) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple and args[-1:] == (Ellipsis,) and args[0] is str and isinstance(value, str):
        value = [value]  # a lone name for a tuple of names
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
        raise _field_error(path, f"expected {_describe(tp)}, got {value!r}")
    if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        if len(value) != len(args):
            raise _field_error(path, f"expected {_describe(tp)}, got {value!r}")
        return tuple(coerce(a, v, f"{path}[{i}]", keep) for i, (a, v) in enumerate(zip(args, value)))
    item = args[0] if args else Any
    out = [coerce(item, v, f"{path}[{i}]", keep) for i, v in enumerate(value)]
    return tuple(out) if origin is tuple else out


def _union(tp: Any, value: Any, path: str, keep: bool) -> Any:
    members = [a for a in typing.get_args(tp) if a is not type(None)]
    if value is None:
        if len(members) < len(typing.get_args(tp)):
            return None
        raise _field_error(path, f"expected {_describe(tp)}, got null")
    if len(members) == 1:
        return coerce(members[0], value, path, keep)
    for m in members:  # a value already of a member's type is kept as it is
        if m in (bool, int, float, str) and type(value) is m:
            return value
    if isinstance(value, Mapping):  # a mapping for the one section member: its own error, if any
        maps = [m for m in members if _is_section(m) or typing.get_origin(m) in (dict, Mapping) or m in (dict, Mapping)]
        if len(maps) == 1:
            return coerce(maps[0], value, path, keep)
    for m in members:
        try:
            return coerce(m, value, path, keep)
        except ConfigError:
            continue
    raise _field_error(path, f"expected {_describe(tp)}, got {value!r}")


def coerce(tp: Any, value: Any, path: str, keep: bool = False) -> Any:
    """Check ``value`` against annotation ``tp`` and convert it; ``path`` names it in errors.

    ``keep``: numbers stay as written (an int in a float field stays an int; only strings are parsed).
    """
    if tp is Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return _union(tp, value, path, keep)
    if value is None:
        raise _field_error(path, f"expected {_describe(tp)}, got null")
    if isinstance(tp, type) and issubclass(tp, Overrides):
        return tp(value, path=path)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return Overrides.of(tp)(value, path=path) if keep else _build(tp, value, path)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if not any(value == a and type(value) is type(a) for a in allowed):
            raise _field_error(path, f"expected one of {allowed}, got {value!r}")
        return value
    if tp in (bool, int, float, str):
        return _scalar(tp, value, path, keep)
    if origin in (tuple, list):
        return _sequence(tp, value, path, keep)
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _field_error(path, f"expected a mapping, got {value!r}")
        args = typing.get_args(tp)
        item = args[1] if len(args) == 2 else Any
        return {k: coerce(item, v, _join(path, k), keep) for k, v in value.items()}
    if isinstance(tp, type) and not isinstance(value, tp):
        raise _field_error(path, f"expected {_describe(tp)}, got {value!r}")
    return value


def _check_choices(f: dataclasses.Field, value: Any, path: str) -> None:
    allowed = f.metadata.get("choices")
    if allowed is not None and value not in allowed:
        raise _field_error(path, f"expected one of {allowed}, got {value!r}")


def _build(schema: type, data: Any, path: str) -> Any:
    shorthand = getattr(schema, "__config_shorthand__", None)  # the field a bare scalar fills
    if shorthand is not None and isinstance(data, (str, int, float)) and not isinstance(data, bool):
        data = {shorthand: data}
    if not isinstance(data, Mapping):
        raise _field_error(path or schema.__name__, f"expected a mapping, got {data!r}")
    specs = {f.name: f for f in dataclasses.fields(schema) if f.init}
    for key in data:
        if key not in specs:
            raise unknown_key(path, key, specs)
    hints = _hints(schema)
    kwargs = {}
    for name, f in specs.items():
        where = _join(path, name)
        if name in data:
            kwargs[name] = coerce(hints[name], data[name], where)
            _check_choices(f, kwargs[name], where)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"config field {where!r} is required", where)
    return schema(**kwargs)


def load(schema: type, data: Mapping | None = None, overrides: list[str] | tuple[str, ...] = (), *, path: str = "",
         where: str = "") -> Any:
    """Build a ``schema`` dataclass from ``data`` plus ``--set key=value`` ``overrides``.

    ``path`` prefixes every dotted key (a section loaded on its own); ``where`` prefixes every message
    (e.g. the file). Raises :class:`ConfigError`.
    """
    try:
        if data is not None and not isinstance(data, Mapping):
            raise ConfigError(f"expected a mapping at the top level, got {type(data).__name__}", path)
        d = copy.deepcopy(dict(data)) if data is not None else {}
        apply_overrides(d, overrides)
        return _build(schema, d, path)
    except ConfigError as e:
        if not where:
            raise
        raise ConfigError(f"{where}: {e}", e.path) from None


# ------------------------------------------------------------------------------------------ partial sections
class Overrides(dict):
    """Some of the fields of the dataclass ``schema``, each checked and coerced at load; the rest unset.

    Subclasses set ``schema``; ``types`` adds keys that are not schema fields (or retypes fields) and
    ``excluded`` maps a schema field to why it may not be set here. Keys keep the order they were given.
    Numbers stay as written (``keep``); a nested dataclass field is itself an ``Overrides`` of it.
    """

    schema: ClassVar[type | None] = None
    types: ClassVar[dict[str, Any]] = {}
    excluded: ClassVar[dict[str, str]] = {}

    def __init__(self, data: Mapping | None = None, path: str = ""):
        super().__init__()
        self.path = path
        if data is None:
            return
        if not isinstance(data, Mapping):
            raise _field_error(path or type(self).__name__, f"expected a mapping, got {data!r}")
        self.update(data)

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        """``{key: annotation}`` of every key this section accepts."""
        out = {k: v for k, v in _hints(cls.schema).items() if k not in cls.excluded} if cls.schema else {}
        out.update(cls.types)
        return out

    @classmethod
    @functools.cache
    def of(cls, schema: type) -> type[Overrides]:
        """The plain ``Overrides`` class of a dataclass (no extra or excluded keys)."""
        return type(f"{schema.__name__}Overrides", (Overrides,), {"schema": schema, "_of": True, "__module__": __name__})

    def __reduce__(self):  # copies and pickles rebuild (and re-check) the section, also one made by `of`
        cls = type(self)
        return (_rebuild, (None if cls.__dict__.get("_of") else cls, self.schema, dict(self), self.path))

    def _check(self, key: Any, value: Any) -> Any:
        where = _join(self.path, key)
        if key in self.excluded:
            raise ConfigError(f"config field {where!r} {self.excluded[key]}", where)
        known = self.field_types()
        if key not in known:
            raise unknown_key(self.path, key, known)
        value = coerce(known[key], value, where, keep=True)
        if self.schema is not None and key in self.schema.__dataclass_fields__:
            _check_choices(self.schema.__dataclass_fields__[key], value, where)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, self._check(key, value))

    def update(self, other: Mapping | None = None, /, **kw: Any) -> None:  # type: ignore[override]
        for k, v in {**(other or {}), **kw}.items():
            self[k] = v

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)


def _rebuild(cls: type[Overrides] | None, schema: type, data: dict, path: str) -> Overrides:
    return (cls or Overrides.of(schema))(data, path)


# ------------------------------------------------------------------------------------------ files, --set, output
def read_yaml(path: str | Path, what: str = "config file") -> dict:
    """A YAML file holding a mapping (empty file: ``{}``); errors name the file."""
    p = Path(path)
    try:
        loaded = yaml.safe_load(p.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {p}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML: {e}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    return loaded


def set_by_path(d: dict, dotted: str, value: Any) -> None:
    """``--set optim.lr=3e-4``: assign a (YAML-parsed) value at a dotted path, making sections as needed."""
    keys = dotted.split(".")
    cur = d
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
        if not isinstance(cur, dict):
            raise ConfigError(f"--set {dotted}: '{k}' is not a section", dotted)
    cur[keys[-1]] = value


def apply_overrides(d: dict, overrides: list[str] | tuple[str, ...] | None) -> dict:
    """Apply ``key=value`` strings (values parsed as YAML) to ``d`` in place; returns ``d``."""
    for ov in overrides or []:
        if "=" not in ov:
            raise ConfigError(f"--set expects key=value, got {ov!r}")
        k, v = ov.split("=", 1)
        set_by_path(d, k.strip(), yaml.safe_load(v))
    return d


def to_plain(obj: Any) -> Any:
    """Dataclasses and mappings as dicts (field order), tuples as lists, the rest as it is."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj
