"""Other spellings of config keys: the source experiments' names and the names keys had before
every key got one meaning. All of them are in the tables below and are applied when a config is
read (each YAML file, each override list, a run folder's saved config), so the rest of the code
sees one spelling, and a saved ``config.yaml`` holds only the canonical keys.

- ``method_cfg.*`` is the seeds' spelling of ``method.*``.
- ``model: NAME`` (a string, as every config before ``model.dtype`` had it) is ``model.name: NAME``.
- :data:`SEED_KEYS`: adapter keys the seeds set under ``method`` move to the adapter.
- A layer that changes ``adapter.type`` (a child YAML, ``adapter.type=X``) starts the adapter
  from X's defaults and keeps only the options X shares with the adapter it replaces
  (``num_virtual_tokens``, ``init``); one that changes ``method.name`` starts the method from
  its defaults, as ``method.name=X`` on the command line does.
- :data:`METHOD_KEYS`: a method's older key names, per method: the same meaning has one name in
  every RL method (TRL's GRPOConfig names: ``num_generations``, ``epsilon``, ``beta``), and
  PTCPRL's term weights say what they weigh.

Both spellings in one place with different values is an error naming both keys; a later layer
(a child YAML, the command line) overrides an earlier one in either spelling, as usual.
"""

from __future__ import annotations

from typing import Any

import yaml

from ..adapters import make_config
from ..config import parse_override
from ..errors import ConfigError

#: section prefixes: the seed's ``method_cfg.x`` is ``method.x``
ALIASES = {"method_cfg": "method"}


def _from_vocab(value: Any) -> str:
    if not isinstance(value, bool):
        raise ConfigError(f"config key 'method.initialize_from_vocab'={value!r}: expected true, false or null")
    return "vocab" if value else "random"


#: the seeds' spellings of adapter keys under ``method``: seed key -> (the key it spells, how its
#: value maps); a null seed value means "not set"
SEED_KEYS: dict[str, tuple[str, Any]] = {
    "method.n_soft_tokens": ("adapter.num_virtual_tokens", None),  # trlx's soft-prompt PPO
    "method.num_virtual_tokens": ("adapter.num_virtual_tokens", None),  # PTCPRL
    "method.initialize_from_vocab": ("adapter.init", _from_vocab),  # trlx: true = 'vocab', false = 'random'
}

_RL = {"group_size": "num_generations"}
_PPO = {**_RL, "kl_coef": "beta", "init_kl_coef": "beta", "cliprange": "epsilon"}  # trlx's names

#: per method: older key -> canonical key
METHOD_KEYS: dict[str, dict[str, str]] = {
    "ptcprl": {"alpha": "mle_weight", "beta": "contrastive_weight", "gamma": "rl_weight",
               "temperature": "contrastive_temperature"},
    "grpo": _RL,
    "ppo": _PPO,
    "ppo_single_step": _PPO,
    "polychromic": {**_RL, "n_generations": "num_generations", "alpha": "mle_weight", "scale": "scale_rewards"},
}


def _dump(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def canonical_method(section: dict, where: str = "config", name: str | None = None) -> dict:
    """A method section with its older key names (:data:`METHOD_KEYS`, for its ``name`` or the
    given one) renamed; an older and a canonical key with different values is an error."""
    renames = METHOD_KEYS.get(section.get("name", name) or "", {})
    out = dict(section)
    for old, new in renames.items():
        if old not in out:
            continue
        value = out.pop(old)
        if new in section and section[new] != value:
            raise ConfigError(f"{where}: method.{old}={value!r} and method.{new}={section[new]!r} disagree "
                              f"(method.{old} is the older spelling of method.{new}); give one of them")
        out[new] = value
    return out


def seed_aliases(raw: dict, where: str = "config", inherited: dict | None = None) -> dict:
    """``raw`` (one YAML file, or a whole config) with every spelling of the tables above moved to
    the key it spells; both spellings in one mapping with different values is an error naming both.
    ``inherited``: what the file's ``defaults`` gave, for the method's name when the file has none."""
    raw = dict(raw)
    parent = (inherited or {}).get("adapter")
    kind = raw["adapter"].get("type") if isinstance(raw.get("adapter"), dict) else None
    if isinstance(parent, dict) and isinstance(kind, str) and kind != parent.get("type"):
        inherited["adapter"] = swap_adapter(parent, kind)  # the parent's LoRA rank is no prefix's option
    if isinstance(raw.get("model"), str):  # the backbone's name alone: the section's other keys keep theirs
        raw["model"] = {"name": raw["model"]}
    if isinstance(raw.get("method_cfg"), dict):
        if "method" in raw:
            raise ConfigError(f"{where}: give 'method' or its seed spelling 'method_cfg', not both")
        raw["method"] = raw.pop("method_cfg")
    if not isinstance(raw.get("method"), dict):
        return raw
    parent = (inherited or {}).get("method")
    name = raw["method"].get("name")
    if isinstance(parent, dict) and isinstance(name, str) and name != parent.get("name"):
        inherited["method"] = {}  # another method: its own defaults, none of the parent method's options
    raw["method"] = method = canonical_method(raw["method"], where,
                                              parent.get("name") if isinstance(parent, dict) else None)
    for key, (target, convert) in SEED_KEYS.items():
        option_name = key.split(".", 1)[1]
        if option_name not in method:
            continue
        given = method.pop(option_name)
        if given is None:
            continue
        value = convert(given) if convert else given
        section, option = target.split(".")
        if not isinstance(raw.get(section, {}), dict):
            continue  # a malformed section: building it says so
        raw[section] = dict(raw.get(section) or {})
        if option in raw[section] and raw[section][option] != value:
            raise ConfigError(f"{where}: {key}={given!r} and {target}={raw[section][option]!r} "
                              f"disagree ({key} is the seed's spelling of {target}); give one of them")
        raw[section][option] = value
    return raw


def swap_adapter(section: dict, kind: str) -> dict:
    """The adapter ``section`` turned into a ``kind`` adapter: kind's defaults, with the options
    of ``section`` that kind also has."""
    try:
        defaults = make_config(kind, {}).to_dict()
    except ConfigError:  # an unknown type: building the config names the registered ones
        return {"type": kind}
    return {"type": kind, **defaults, **{k: v for k, v in section.items() if k in defaults}}


def canonical_key(key: str) -> str:
    """``method_cfg.x`` -> ``method.x``; other keys as they are."""
    for old, new in ALIASES.items():
        if key == old or key.startswith(old + "."):
            return new + key[len(old):]
    return key


def alias_overrides(overrides: list[str], method_name: str | None) -> list[str]:
    """The override list with every older spelling rewritten to its key (method keys for the
    method ``method_name`` the config ends up with; a null seed value drops the override); the
    same key set twice, in two spellings, to different values is an error."""
    renames = METHOD_KEYS.get(method_name or "", {})
    out: list[str] = []
    given: dict[str, tuple[str, Any]] = {}
    for text in overrides:
        ov = parse_override(text)
        key = canonical_key(ov.key)
        prefix = {"add": "+", "force": "++", "delete": "~"}.get(ov.mode, "")
        if key in SEED_KEYS and ov.mode != "delete":
            target, convert = SEED_KEYS[key]
            if ov.value is None:
                continue
            value = convert(ov.value) if convert else ov.value
            text = f"{target}={_dump(value)}"
        elif key == "model" and ov.mode != "delete" and not isinstance(ov.value, dict):
            # model=NAME is model.name=NAME (model.dtype stays): one key, so a later one simply wins
            key = target = "model.name"
            value = ov.value
            text = f"{prefix}{target}=" + text.split("=", 1)[1]
        elif key.startswith("method.") and key[len("method."):] in renames:
            target, value = "method." + renames[key[len("method."):]], ov.value
            text = f"{prefix}{target}" + ("" if ov.mode == "delete" else "=" + text.split("=", 1)[1])
        else:
            target, value = key, ov.value
        if target in given and given[target][1] != value and given[target][0] != key:
            raise ConfigError(f"overrides {given[target][0]}={given[target][1]!r} and {key}={ov.value!r} disagree "
                              f"(both set {target}); give one of them")
        given[target] = (key, value)
        out.append(text)
    return out
