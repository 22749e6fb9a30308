"""Adapters on the Hugging Face Hub: load ``hub:user/repo[@revision]`` (or a plain ``user/repo`` that
is no local folder) through ``huggingface_hub``'s cache, and prepare and push an adapter folder with
a model card.

Loading goes through ``snapshot_download``: the cache (``HF_HUB_CACHE``), ``HF_HUB_OFFLINE`` (a cached
snapshot, else a one-line error) and revisions (branch, tag or commit) behave as in transformers.
A pushed folder is laid out like a packaged adapter: ``softprompt_adapter.json`` and its weights at
the top, the head of a classifier or reward model, the run's ``config.yaml`` and ``metrics.json``,
and ``README.md``, the card. Anything that reads a run folder (``from_pretrained``, a reward's
``run:``, ``init_from``, ``eval-gen``) reads it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import AdapterLoadError
from .backbones import ALIASES, hub_offline

HUB = "hub:"
#: what a pushed folder may hold (nothing else of a run folder is uploaded)
ADAPTER_FILES = ("softprompt_adapter.json", "adapter.safetensors", "backbone_layers.safetensors", "head.safetensors")
RUN_FILES = ("config.yaml", "metrics.json")


def split_revision(spec: str) -> tuple[str, str | None]:
    """``user/repo@rev`` -> (``user/repo``, ``rev``); no ``@``: (spec, None)."""
    repo, _, revision = spec.partition("@")
    return repo, revision or None


def hub_snapshot(spec: str, revision: str | None = None) -> Path:
    """The local folder of Hub repo ``spec`` (``user/repo``, ``user/repo@rev``) at ``revision``,
    from the cache or downloaded; an AdapterLoadError saying why when it cannot be had."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo, rev = split_revision(spec)
    revision = revision or rev
    where = f"{repo}" + (f"@{revision}" if revision else "")
    try:
        return Path(snapshot_download(repo, revision=revision, allow_patterns=[*ADAPTER_FILES, *RUN_FILES,
                                                                                  "README.md"]))
    except LocalEntryNotFoundError:
        offline = hub_offline()
        why = f"{offline} and it is not in the Hugging Face cache" if offline else \
            "it is not in the Hugging Face cache and the Hub could not be reached"
        raise AdapterLoadError(f"Hub adapter {where}: {why}") from None
    except RevisionNotFoundError:
        raise AdapterLoadError(f"Hub adapter {where}: no revision {revision!r} (a branch, tag or commit)") from None
    except RepositoryNotFoundError:
        raise AdapterLoadError(f"Hub adapter {where}: no such repository (or it is private: log in with "
                               "`hf auth login` or set HF_TOKEN)") from None


# --------------------------------------------------------------------------- pushing


def _source_id(spec: str) -> str:
    """The Hub id of a backbone spec: an alias's source model, a hub id as it is, else the spec."""
    return ALIASES[spec].source_id if spec in ALIASES else spec


def _count_parameters(directory: Path) -> int:
    """Values in the adapter's weight files (and trained blocks'), read from their headers."""
    import math

    from safetensors import safe_open

    total = 0
    for name in ("adapter.safetensors", "backbone_layers.safetensors"):
        if (directory / name).exists():
            with safe_open(str(directory / name), "pt") as f:
                total += sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())
    return total


def model_card(folder: Path, repo_id: str) -> str:
    """README.md for an adapter folder: base model, adapter type and size, the training method and
    config, the run's metrics, how to load it and the command that reproduces it."""
    import yaml

    meta = json.loads((folder / "softprompt_adapter.json").read_text())
    backbone = meta["backbone"].get("spec", "?")
    config = yaml.safe_load((folder / "config.yaml").read_text()) if (folder / "config.yaml").exists() else None
    metrics = json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").exists() else {}
    method = (config or {}).get("method", {}).get("name") if isinstance((config or {}).get("method"), dict) else None
    adapter = meta["adapter_type"]
    size = _count_parameters(folder)
    tags = ["softprompt", adapter.replace("_", "-")] + ([method] if method else [])
    front = {"library_name": "softprompt", "base_model": _source_id(backbone), "tags": tags}
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# {repo_id.split('/')[-1]}", "",
             f"A {adapter.replace('_', ' ')} adapter for `{_source_id(backbone)}`"
             + (f" (softprompt backbone `{backbone}`)" if _source_id(backbone) != backbone else "")
             + ", trained with [softprompt](https://pypi.org/project/softprompt/)"
             + (f" (method `{method}`)" if method else "") + ".", "",
             "| | |", "| --- | --- |", f"| base model | `{_source_id(backbone)}` |", f"| adapter | `{adapter}` |",
             f"| adapter options | `{json.dumps(meta.get('config', {}), sort_keys=True)}` |",
             f"| trainable parameters | {size:,} |"]
    if (folder / "head.safetensors").exists():
        lines.append("| head | a trained head (`head.safetensors`): a classifier or reward model |")
    if method:
        lines.append(f"| training method | `{method}` |")
    lines += ["", "## Use", "", "```python", "from softprompt import SoftPromptModel", "",
              f'model = SoftPromptModel.from_pretrained("hub:{repo_id}")', "```", ""]
    if config is not None:
        lines += ["As a reward or judge in a softprompt config: "
                  f'`rewards: [{{name: reward_model, run: "hub:{repo_id}"}}]` (a reward model) or '
                  f'`judge: {{name: classifier, run: "hub:{repo_id}"}}` (a classifier).', ""]
    if metrics:
        shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        lines += ["## Metrics", "", "The run's final evaluation (`metrics.json`; its best checkpoint):", "",
                  "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in shown.items()]
        lines.append("")
    if config is not None:
        lines += ["## Reproduce", "", "The resolved training config is `config.yaml` in this repository:", "",
                  "```bash", "pip install softprompt",
                  f"hf download {repo_id} config.yaml --local-dir .",
                  "softprompt train --config-name ./config.yaml", "```", "",
                  "<details><summary>config.yaml</summary>", "", "```yaml",
                  (folder / "config.yaml").read_text().strip(), "```", "", "</details>", ""]
    return "\n".join(lines)


def prepare_upload(adapter_dir: Path, out: Path, repo_id: str, run_dir: Path | None = None) -> Path:
    """Write the folder a push uploads to ``out``: the adapter files of ``adapter_dir`` (a run's
    best checkpoint, or an adapter directory), the run's ``config.yaml`` and ``metrics.json`` when
    ``run_dir`` is given, and the card. Nothing else of a run (optimizer state, logs, predictions)
    goes."""
    adapter_dir, out = Path(adapter_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ADAPTER_FILES:
        if (adapter_dir / name).exists():
            shutil.copy2(adapter_dir / name, out / name)
    for name in RUN_FILES:
        for where in ([Path(run_dir)] if run_dir else []) + [adapter_dir]:
            if (where / name).exists():
                shutil.copy2(where / name, out / name)
                break
    (out / "README.md").write_text(model_card(out, repo_id))
    return out


def push_folder(folder: Path, repo_id: str, private: bool | None = None, token: str | None = None,
                revision: str | None = None, commit_message: str = "Upload softprompt adapter") -> str:
    """Create ``repo_id`` if needed and upload ``folder``; the commit's URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), revision=revision,
                             commit_message=commit_message)
    return str(getattr(info, "commit_url", info))
