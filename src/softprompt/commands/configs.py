"""``softprompt configs``: the experiment configs ``--config-name`` finds (./configs, then the ones
shipped in the package), and one of them printed to copy and edit."""

from __future__ import annotations

from pathlib import Path

import yaml

from ..config import PACKAGE_CONFIGS, config_description, config_dirs, config_names, find_config, load_config, to_dict
from ..experiment import from_dict, seed_aliases
from .stages import Pipeline, is_pipeline


def list_configs() -> list[tuple[str, str, Path]]:
    """(name, one-line description, file) of every config ``--config-name`` finds, by name."""
    out = []
    for name in config_names():
        path = find_config(name)
        out.append((name, config_description(path), path))
    return out


def format_list(rows: list[tuple[str, str, Path]]) -> str:
    width = max((len(name) for name, _, _ in rows), default=0)
    lines = []
    for name, description, path in rows:
        where = "" if path.parent == PACKAGE_CONFIGS.resolve() else f"  [{path.parent}]"
        lines.append(f"{name:<{width}}  {description}{where}")
    dirs = " then ".join(str(d) for d in config_dirs())
    lines += ["", f"searched: {dirs}",
              "print one to copy and edit: softprompt configs show NAME [key=value ...] [--preset P] [--raw]"]
    return "\n".join(lines) + "\n"


def show_config(name: str, overrides: list[str] = (), preset: str | None = None, raw: bool = False) -> str:
    """Config ``name`` as YAML: resolved (every key, with the preset and overrides applied), or the file
    as written with ``raw``. A multi-stage config without overrides is shown as written (its stages
    name other configs); with overrides or a preset, each training stage resolved."""
    path = find_config(name)
    text = path.read_text(encoding="utf-8")
    data = load_config(name, normalize=seed_aliases)
    if raw or (is_pipeline(data) and not overrides and preset is None):
        return text if text.endswith("\n") else text + "\n"
    given = " ".join([*([f"--preset {preset}"] if preset else []), *overrides])
    head = f"# {path.stem}: {config_description(path)}\n# resolved from {path}" + (f" with {given}" if given else "")
    head += "\n"
    if is_pipeline(data):
        pipe = Pipeline(path.stem, data, list(overrides), preset, console=None, progress=False)
        docs = [f"# stage {stage}\n" + _yaml(config) for stage, config in pipe.configs.items()]
        return head + "---\n".join(docs)
    return head + _yaml(from_dict(data, list(overrides), preset=preset, where=str(name)))


def _yaml(config) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True)
