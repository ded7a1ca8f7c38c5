"""Params presets: short overlays on the default params, merged by `restem preset NAME`.

`presets/defaults.yaml` is the one home of the default params and their comments (the ReST-EM recipe,
and what a new workspace's `params.yaml` holds). Every other file in `presets/` is an overlay:

- its first line is a comment that says what the preset follows;
- an optional top-level `extends: NAME` builds on another preset instead of the defaults;
- the rest are the keys it changes, nested as in params.yaml.

Merging: a params section (a Pydantic model in `restem.schemas.params`) merges key by key; a mapping whose keys
the user names (`loop.iterations`, `loop.steps`, `test_sets`: a `dict` field of the schema) is replaced
whole by an overlay that gives it, since it is one decision (a one-round preset must be able to drop
iteration 2); any other value replaces the default. The merged file keeps the defaults' comments, and
an overlay's own comment on a key replaces the default's, so a preset's params.yaml documents itself.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from restem.schemas.errors import RestemError

PRESETS = Path(__file__).resolve().parent.parent / "presets"
DEFAULTS = "defaults"
_HEADER = "# restem params: preset `{name}`. {description}"


def _yaml():
    from ruamel.yaml import YAML

    y = YAML()  # round trip: comments and flow styles survive
    y.width = 4096
    y.preserve_quotes = True
    y.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    return y


def _dict_fields(model: Any = None, where: str = "") -> set[str]:
    """Dotted paths of the schema's `dict` fields: mappings keyed by the user's names, replaced whole."""
    import typing

    from pydantic import BaseModel

    from restem.schemas.params import Params

    found: set[str] = set()
    for name, info in (model or Params).model_fields.items():
        dotted = f"{where}.{name}" if where else name
        stack = [info.annotation]
        while stack:
            ann = stack.pop()
            if typing.get_origin(ann) is dict:
                found.add(dotted)
            elif isinstance(ann, type) and issubclass(ann, BaseModel):
                found |= _dict_fields(ann, dotted)
            else:
                stack.extend(typing.get_args(ann))
    return found


def preset_names() -> list[str]:
    """The presets `restem preset` knows (the defaults are the preset `rest-em`, not a name of their own)."""
    return sorted(p.stem for p in PRESETS.glob("*.yaml") if p.stem != DEFAULTS)


def _path(name: str) -> Path:
    path = PRESETS / f"{name}.yaml"
    if name == DEFAULTS or not path.is_file():
        raise RestemError(f"unknown preset {name!r}; choose one of {preset_names()} (`restem preset --list`)")
    return path


def description(name: str) -> str:
    """What the preset follows: its overlay's first line, without the comment sign."""
    path = _path(name)
    first = (path.read_text().splitlines() or [""])[0]
    if not first.startswith("#"):
        raise RestemError(f"{path}: the first line must be a comment saying what the preset follows")
    return first.lstrip("#").strip()


def _load(path: Path) -> Any:
    try:
        data = _yaml().load(path.read_text())
    except Exception as exc:  # noqa: BLE001 - ruamel raises several error types for bad YAML
        raise RestemError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        from ruamel.yaml.comments import CommentedMap

        data = CommentedMap()
    if not hasattr(data, "items"):
        raise RestemError(f"{path}: expected a mapping of params sections at the top level")
    return data


def _merge(into: Any, overlay: Any, where: str, path: Path, whole: set[str]) -> None:
    for key, value in overlay.items():
        dotted = f"{where}.{key}" if where else str(key)
        current = into.get(key) if key in into else None
        comment = overlay.ca.items.get(key)
        if hasattr(value, "items") and hasattr(current, "items") and dotted not in whole:
            _merge(current, value, dotted, path, whole)
        elif hasattr(current, "items") and not hasattr(value, "items") and value is not None:
            raise RestemError(f"{path}: `{dotted}` is a section in the defaults; give it as a mapping of keys")
        else:
            into[key] = value
        if comment is not None and comment[2] is not None and "\n" not in comment[2].value.rstrip("\n"):
            into.ca.items[key] = comment  # the overlay's own end-of-line comment wins


def merged(name: str, _seen: tuple[str, ...] = ()) -> Any:
    """The preset's params as a round-trip YAML mapping: the defaults (or the preset it extends) with its overlay."""
    path = _path(name)
    if name in _seen:
        raise RestemError(f"{path}: `extends` goes round in a circle: {' -> '.join(_seen + (name,))}")
    overlay = _load(path)
    parent = overlay.pop("extends", None)
    if parent is None:
        base = _load(PRESETS / f"{DEFAULTS}.yaml")
    elif isinstance(parent, str):
        base = merged(parent, _seen + (name,))
    else:
        raise RestemError(f"{path}: `extends` names one preset, e.g. `extends: easy-to-hard`")
    _merge(base, overlay, "", path, _dict_fields())
    return base


def render(name: str) -> str:
    """The complete params file of a preset: header line, then the defaults' text with the overlay applied."""
    buf = io.StringIO()
    _yaml().dump(merged(name), buf)
    lines = buf.getvalue().splitlines()
    if lines and lines[0].startswith("#"):  # the defaults' own first line gives way to the preset's
        lines = lines[1:]
    return "\n".join([_HEADER.format(name=name, description=description(name)), *lines]) + "\n"


def load_preset(name: str):
    """The preset's validated params (an invalid preset is an error naming its file and key)."""
    import yaml
    from pydantic import ValidationError

    from restem.schemas.params import Params, describe_errors

    try:
        return Params.model_validate(yaml.safe_load(render(name)))
    except ValidationError as exc:
        raise RestemError(f"{_path(name)}: invalid params after merging:\n  {describe_errors(exc)}") from None
