"""Config loading: dataclass defaults <- YAML/JSON file <- `--field=value` overrides.

Every recipe owns one plain dataclass. The comment after (or the comment lines above) each field is its help
text, so the code is the documentation:

    @dataclass
    class TrainConfig:
        lr: float = 3e-4  # peak learning rate
        steps: int = 1000  # optimizer steps

    cfg = load_config(TrainConfig, ["run.yaml", "--lr=1e-3"])

Rules (ARCHITECTURE.md, STYLE.md): field name = YAML key = CLI flag = log key; an unknown key is an error that
names the closest valid key; values are converted to the field's type and a bad value names the flag.
A field whose metadata has `positional=True` also takes bare (non-flag) arguments, e.g. `lmstack tokenize "hi"`;
metadata `flag="from"` gives a field a CLI flag that is not a Python identifier:
`src: str = field(metadata={"flag": "from"})`.

Sections nest one level: a field made with `section(ModelConfig, d_model=128)` holds a whole dataclass, set as a
YAML mapping (`model: {d_model: 256}`) or with dotted flags (`--model.d_model=256`); `--help` lists its fields
as `--model.<field>`. The section's own defaults override the class's, and its `__post_init__` runs on the
merged values (so derived fields such as `head_dim` follow `d_model`). `fixed=(...)` names fields the program
sets itself (e.g. the vocabulary size from the tokenizer): setting one is an error that says so.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

C = TypeVar("C")


class ConfigError(ValueError):
    """A config file, key or value is wrong; the message names it and says what was expected."""


def section(cls: type[C], fixed: tuple[str, ...] = (), **defaults: Any) -> Any:
    """A nested config section of type `cls` whose defaults are `defaults` (else the class's own).

    >>> @dataclass
    ... class RunConfig:
    ...     model: ModelConfig = section(ModelConfig, fixed=("vocab_size",), n_layers=4)  # the network's shape
    """
    return dataclasses.field(
        default_factory=lambda: cls(**defaults), metadata={"section": cls, "defaults": defaults, "fixed": fixed}
    )


def _sections(cls: type) -> dict[str, dataclasses.Field]:
    """The fields of `cls` that are nested sections, by name."""
    return {f.name: f for f in dataclasses.fields(cls) if "section" in f.metadata}


def field_help(cls: type) -> dict[str, str]:
    """Help text per field, read from the comments in the dataclass source."""
    helps: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        pending: list[str] = []
        for line in source.splitlines():
            stripped = line.strip()
            if stripped.startswith("#"):
                pending.append(stripped.lstrip("#").strip())
                continue
            m = re.match(r"\s+(\w+)\s*:[^#]*?(?:#\s*(.*))?$", line)
            if m and not stripped.startswith(("def ", "@", "return")):
                text = " ".join(pending + ([m.group(2)] if m.group(2) else []))
                if text:
                    helps[m.group(1)] = text
            pending = []
    return helps


def _resolved_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(value: Any, tp: Any, name: str) -> Any:
    """Convert `value` (a string from the CLI, or a YAML value) to type `tp`, or raise naming `--name`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, name)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"--{name}: cannot parse {value!r}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"--{name}: got {value!r}, expected one of {list(args)}")
    if origin in (list, tuple):
        if isinstance(value, str) and value.lstrip().startswith("["):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as e:
                raise ConfigError(f"--{name}: got {value!r}, expected a JSON list ({e})") from None
        elif isinstance(value, str):
            value = [v for v in value.split(",") if v != ""] if value else []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"--{name}: got {value!r}, expected a list")
        inner = args[0] if args else str
        out = [_convert(v, inner, name) for v in value]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if isinstance(value, str):
            value = _mapping_from_text(value, name)
        if not isinstance(value, dict):
            raise ConfigError(f"--{name}: got {value!r}, expected a mapping")
        if not args:
            return dict(value)
        return {_convert(k, args[0], f"{name} key"): _convert(v, args[1], name) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"--{name}: got {value!r}, expected true or false")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"--{name}: got {value!r}, expected {tp.__name__}")
        try:
            if tp is int and isinstance(value, str):
                f = float(value)
                if not f.is_integer():
                    raise ValueError
                return int(f)
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"--{name}: got {value!r}, expected {tp.__name__}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"--{name}: got {value!r}, expected a string")
        return str(value)
    if tp is Any:
        return value
    if tp is Path:
        return Path(value)
    raise ConfigError(f"--{name}: unsupported field type {tp!r}")


def _mapping_from_text(text: str, name: str) -> Any:
    """A mapping given on the command line: inline JSON (`{"a": 1}`) or the path of a JSON / YAML file."""
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"--{name}: got {text!r}, expected a JSON object ({e})") from None
    path = Path(text).expanduser()
    if not path.is_file():
        raise ConfigError(f"--{name}: {text!r} is neither a JSON object nor an existing JSON/YAML file")
    return read_config_file(path)


def _unknown_key_error(key: str, valid: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(sorted(valid))}"
    return ConfigError(f"unknown key '{key}' in {where}{hint}")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON mapping from `path` (a clear error if missing or malformed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value at the top level, got {type(data).__name__}")
    return data


def build_config(cls: type[C], values: dict[str, Any], where: str = "config", prefix: str = "") -> C:
    """Instantiate `cls` from a mapping, converting and checking every key (sections recursively).
    `prefix` ("model.") makes error messages name the dotted flag."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = _resolved_types(cls)
    kwargs = {}
    for key, value in values.items():
        key = key.replace("-", "_")
        if key not in fields:
            raise _unknown_key_error(prefix + key, [prefix + k for k in fields], where)
        f = fields[key]
        if "section" in f.metadata:
            kwargs[key] = _build_section(f, value, where, prefix + key)
        else:
            kwargs[key] = _convert(value, hints[key], prefix + key)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"--{prefix[:-1]}: {e}" if prefix else str(e)) from None


def _build_section(f: dataclasses.Field, value: Any, where: str, name: str) -> Any:
    sub = f.metadata["section"]
    if isinstance(value, sub):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"--{name}: expected a mapping of {sub.__name__} fields (or flags --{name}.<field>)")
    for key in value:
        if key.replace("-", "_") in f.metadata["fixed"]:
            raise ConfigError(f"--{name}.{key} is set by the program, not by the config (see --help)")
    return build_config(sub, {**f.metadata["defaults"], **value}, where, prefix=f"{name}.")


def _flag_target(cls: type, key: str) -> tuple[list[str], Any]:
    """`model.d_model` -> (["model", "d_model"], its type); errors name the closest valid flag."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    aliases = {f.metadata["flag"]: n for n, f in fields.items() if "flag" in f.metadata}
    head, dot, rest = key.partition(".")
    head = aliases.get(head, head.replace("-", "_"))
    valid = list(fields) + list(aliases)
    if head not in fields:
        raise _unknown_key_error(key, valid + [f"{s}.{k}" for s in _sections(cls) for k in _section_keys(cls, s)],
                                 "command-line flags")  # fmt: skip
    f = fields[head]
    if "section" not in f.metadata:
        if dot:
            raise ConfigError(f"--{key}: {head} is not a section; use --{head}=VALUE")
        return [head], _resolved_types(cls)[head]
    if not dot:
        raise ConfigError(
            f"--{head} is a section ({f.metadata['section'].__name__}); set its fields as --{head}.<field>"
        )
    sub = rest.replace("-", "_")
    if sub in f.metadata["fixed"]:
        raise ConfigError(f"--{head}.{sub} is set by the program, not by the config (see --help)")
    if sub not in _section_keys(cls, head):
        raise _unknown_key_error(key, [f"{head}.{k}" for k in _section_keys(cls, head)], "command-line flags")
    return [head, sub], _resolved_types(f.metadata["section"])[sub]


def _section_keys(cls: type, name: str) -> list[str]:
    f = _sections(cls)[name]
    return [g.name for g in dataclasses.fields(f.metadata["section"]) if g.init and g.name not in f.metadata["fixed"]]


def _is_list(tp: Any) -> bool:
    return typing.get_origin(tp) in (list, tuple) or any(
        typing.get_origin(a) in (list, tuple) for a in typing.get_args(tp)
    )


def parse_args(cls: type[C], argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Split argv into config-file paths and `--key=value` / `--key value` / `--section.key=value` overrides."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = _resolved_types(cls)
    positional = [n for n, f in fields.items() if f.metadata.get("positional")]
    overrides: dict[str, Any] = {}
    files: list[str] = []
    bare: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--"):
            key, eq, value = arg[2:].partition("=")
            path, tp = _flag_target(cls, key)
            if not eq:
                nxt = argv[i + 1] if i + 1 < len(argv) else None
                if tp is bool and (nxt is None or nxt.startswith("--") or nxt.lower() not in ("true", "false")):
                    value = "true"
                elif _is_list(tp) and not (nxt or "").lstrip().startswith("["):
                    vals = []
                    while i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                        vals.append(argv[i + 1])
                        i += 1
                    value = vals  # type: ignore[assignment]
                elif nxt is None:
                    raise ConfigError(f"--{key}: missing value")
                else:
                    value = nxt
                    i += 1
            target = overrides
            for part in path[:-1]:
                target = target.setdefault(part, {})
            target[path[-1]] = value
        elif arg.endswith((".yaml", ".yml", ".json")) and not bare:
            files.append(arg)
        else:
            bare.append(arg)
        i += 1
    if bare:
        if not positional:
            raise ConfigError(f"unexpected argument {bare[0]!r}; options are given as --key=value")
        name = positional[0]
        is_list = typing.get_origin(hints[name]) in (list, tuple)
        if not is_list and len(bare) > 1:
            raise ConfigError(f"expected one {name}, got {len(bare)}: {bare}")
        overrides.setdefault(name, bare if is_list else bare[0])
    return overrides, files


def _check_keys(cls: type, data: dict[str, Any], where: str) -> None:
    """Unknown keys in a config file (top level and inside sections) are errors naming the file."""
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    for key, value in data.items():
        k = key.replace("-", "_")
        if k not in names:
            raise _unknown_key_error(key, names, where)
        f = _sections(cls).get(k)
        if f is not None and isinstance(value, dict):
            for sub in value:
                if sub.replace("-", "_") not in _section_keys(cls, k) + list(f.metadata["fixed"]):
                    raise _unknown_key_error(f"{k}.{sub}", [f"{k}.{n}" for n in _section_keys(cls, k)], where)


def _merge(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """`new` over `base`, one level deep for sections (a section mapping is merged, not replaced)."""
    out = dict(base)
    for key, value in new.items():
        key = key.replace("-", "_")
        out[key] = {**out[key], **value} if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_config(cls: type[C], argv: list[str] | None = None, defaults: dict[str, Any] | None = None) -> C:
    """defaults <- files (YAML/JSON, in order) <- `--key=value` flags, then `cls.__post_init__` validates."""
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides, files = parse_args(cls, argv)
    values: dict[str, Any] = dict(defaults or {})
    for f in files:
        data = read_config_file(f)
        _check_keys(cls, data, str(f))
        values = _merge(values, data)
    return build_config(cls, _merge(values, overrides))


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON/YAML-ready dict of a config (paths become strings)."""

    def clean(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return v

    return {k: clean(v) for k, v in dataclasses.asdict(cfg).items()}


def format_help(cls: type, prog: str, description: str = "") -> str:
    """`--help` text: one line per field with type, default and the field's comment; sections as --name.<field>."""
    lines = [f"usage: {prog} [config.yaml ...] [--field=value ...]", ""]
    if description:
        lines += [description.strip(), ""]
    lines.append("options:")
    lines += _help_lines(cls, "", {}, ())
    for name, f in _sections(cls).items():
        sub = f.metadata["section"]
        lines += ["", f"{name} ({sub.__name__}; YAML `{name}:` mapping or --{name}.<field>):"]
        lines += _help_lines(sub, f"{name}.", f.metadata["defaults"], f.metadata["fixed"])
    lines += ["", "  --help                   show this message"]
    lines += ["  --print-config           print the resolved config"]
    return "\n".join(lines)


def _help_lines(cls: type, prefix: str, defaults: dict[str, Any], fixed: tuple[str, ...]) -> list[str]:
    helps = field_help(cls)
    hints = _resolved_types(cls)
    lines = []
    for f in dataclasses.fields(cls):
        if not f.init or f.name in fixed or "section" in f.metadata:
            continue
        if f.name in defaults:
            default = defaults[f.name]
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        tp = getattr(hints[f.name], "__name__", str(hints[f.name]).replace("typing.", ""))
        pos = " (positional)" if f.metadata.get("positional") else ""
        flag = prefix + f.metadata.get("flag", f.name)
        lines.append(f"  --{flag:<22} {tp:<10} default={default!r}{pos}")
        if f.name in helps:
            lines.append(f"  {'':<24} {helps[f.name]}")
    return lines
