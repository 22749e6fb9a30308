"""What each shipped config trains, pinned: every config in src/softprompt/configs/ (each stage of a multi-stage
one, and each preset) resolves to the values in tests/golden/configs.json. A refactoring that
changes an experiment fails here; a deliberate change regenerates the file:

    python tests/test_config_pins.py   # rewrites tests/golden/configs.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "configs.json"
SHIPPED = ROOT / "src" / "softprompt" / "configs"  # package data since issue 19 (configs/ at the root before)
#: keys added since the pins were written, per method ("*": every method), with the value that keeps
#: the pinned behaviour
ADDED: dict[str, dict[str, object]] = {
    "*": {"model.dtype": "float32",  # issue 19: the backbone's precision; fp32 as every config ran before
          "generation.chat_template_kwargs": {},  # nothing extra reaches a chat template, as before
          # a task's (and the prompt sources') data from a datasets dataset; None: not used, as before
          "task.dataset": None, "task.dataset_config": None, "prompts.dataset": None, "prompts.dataset_config": None,},
    "ppo": {"method.epsilon_high": None},  # PPO's clip takes GRPO's upper bound too; None: symmetric, as before
    "ppo_single_step": {"method.epsilon_high": None},
}
#: a deliberate change of what the pins hold, (key, pinned value) -> the value now. Issue 19: no default
#: names the project's own GLUE folder any more (the shipped configs named it, and it was the default);
#: data_dir unset reads $SOFTPROMPT_DATA, then the hub's nyu-mll/glue. The tests set SOFTPROMPT_DATA to
#: that same folder (conftest.py), so what they train on is unchanged.
CHANGED: dict[tuple[str, object], object] = {
    ("task.data_dir", "../shared/data/glue"): None,
    ("prompts.data_dir", "../shared/data/glue"): None,
}
#: keys renamed outside the method section: ``model`` became the section ``model`` (name, dtype)
RENAMED: dict[str, str] = {"model": "model.name"}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        out.update(_flat(v, key) if isinstance(v, dict) and v else {key: v})
    return out


def resolved_configs() -> dict[str, dict]:
    """{config[/stage][@preset]: the flattened resolved config} for every shipped config."""
    from softprompt.commands.stages import is_pipeline, load_pipeline
    from softprompt.config import load_config, to_dict
    from softprompt.experiment import resolve

    out = {}
    for path in sorted(SHIPPED.glob("*.yaml")):
        raw = load_config(path)
        presets = [None, *sorted(raw.get("presets") or {})]
        for preset in presets:
            tag = path.stem + (f"@{preset}" if preset else "")
            common = ["run_id=pin", "output_dir=experiments"]
            if is_pipeline(raw):
                pipe = load_pipeline(str(path), common, preset=preset, progress=False)
                for stage, config in pipe.configs.items():
                    out[f"{tag}/{stage}"] = _flat(to_dict(config))
            else:
                out[tag] = _flat(to_dict(resolve(str(path), common, preset=preset)))
    return out


def _renamed(flat: dict) -> dict:
    """The pinned values under today's key names (renamed keys through the alias table that reads
    configs, experiment.aliases.METHOD_KEYS), with the keys added since and the deliberate CHANGED values."""
    from softprompt.adapters import make_config
    from softprompt.experiment.aliases import METHOD_KEYS

    method = flat.get("method.name")
    renames = {**RENAMED, **{f"method.{old}": f"method.{new}" for old, new in METHOD_KEYS.get(method, {}).items()}}
    # an adapter replaced whole by an override (adapter={type: lora, r: 16}) was saved without its
    # defaults; the typed config saves them: the same adapter
    defaults = {f"adapter.{k}": v for k, v in make_config(flat["adapter.type"], {}).to_dict().items()}
    pinned = {renames.get(k, k): CHANGED.get((k, v), v) if isinstance(v, str) else v for k, v in flat.items()}

    def unpinned(values: dict) -> dict:
        """A default or added key whose pinned value is a dict was flattened into its own keys (key.sub): they win."""
        return {k: v for k, v in values.items() if not any(p.startswith(f"{k}.") for p in pinned)}
    return {**unpinned(defaults), **unpinned({**ADDED["*"], **ADDED.get(method, {})}), **pinned}


def test_every_shipped_config_trains_what_it_trained_when_pinned():
    pinned = json.loads(GOLDEN.read_text())
    now = resolved_configs()
    assert sorted(now) == sorted(pinned), "a config (or stage, or preset) was added or removed: regenerate the pins"
    for name, values in pinned.items():
        expected, got = _renamed(values), now[name]
        changed = {k: (expected.get(k), got.get(k)) for k in set(expected) | set(got) if expected.get(k) != got.get(k)}
        assert not changed, f"{name}: {changed}"


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    GOLDEN.write_text(json.dumps(resolved_configs(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
