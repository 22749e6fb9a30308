"""Sharing a trained adapter.

``softprompt export RUN_DIR OUT --format peft [--merge]``: the adapter in PEFT's format (prompt
tuning, prefix tuning, LoRA; ``peft.PeftModel.from_pretrained(base, OUT)`` loads it), or with
``--merge`` a LoRA run as one standalone transformers model folder for serving.

``softprompt push RUN_DIR REPO_ID``: the adapter, the run's config and metrics and a model card to
the Hugging Face Hub (``modeling/hub.py``); ``--dry-run OUT`` writes that folder and sends nothing.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import SoftPromptError
from ..modeling.backbones import is_hub_id
from ..modeling.hub import prepare_upload, push_folder
from ..modeling.model import SoftPromptModel, resolve_adapter_dir
from ..modeling.peft_interop import export_peft, merge_lora


def add_export(sub) -> None:
    p = sub.add_parser("export", help="write a run's adapter in PEFT's format (prompt, prefix, LoRA), or with "
                                      "--merge a LoRA run as a standalone transformers model folder")
    p.add_argument("run", metavar="RUN_DIR", help="run folder (its best checkpoint) or adapter directory")
    p.add_argument("out", metavar="OUT", help="the folder to write (must not exist, or be empty)")
    p.add_argument("--format", choices=["peft"], default="peft", help="the adapter format (default: peft)")
    p.add_argument("--merge", action="store_true", help="LoRA only: fold the update into the weights and write "
                                                         "the whole model (AutoModelForCausalLM loads it)")
    p.add_argument("--model", default=None, help="the backbone, when not the one the run records")
    p.set_defaults(func=cmd_export)


def export_run(run: str | Path, out: str | Path, merge: bool = False, backbone: str | None = None) -> Path:
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SoftPromptError(f"{out} exists and is not empty; give a new folder (nothing is overwritten)")
    source = resolve_adapter_dir(run)  # checked before loading the backbone
    model = SoftPromptModel.from_pretrained(str(source), backbone=backbone)
    return merge_lora(model, out) if merge else export_peft(model, out)


def cmd_export(args) -> int:
    out = export_run(args.run, args.out, merge=args.merge, backbone=args.model)
    head = resolve_adapter_dir(args.run) / "head.safetensors"
    what = "a standalone model (transformers' AutoModelForCausalLM.from_pretrained)" if args.merge else \
        "a PEFT adapter (peft.PeftModel.from_pretrained(base_model, OUT))"
    print(f"wrote {what} to {out}")
    if head.exists():
        print(f"note: the run's classifier head ({head}) is not part of it; it stays in the run folder")
    return 0


def add_push(sub) -> None:
    p = sub.add_parser("push", help="upload a run's adapter, config, metrics and a model card to the Hugging Face "
                                    "Hub (--dry-run OUT: write the folder only)")
    p.add_argument("run", metavar="RUN_DIR", help="run folder (its best checkpoint) or adapter directory")
    p.add_argument("repo_id", metavar="REPO_ID", help="the Hub repository, user/name (created if needed)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--revision", default=None, help="push to this branch (created if needed)")
    p.add_argument("--dry-run", metavar="OUT", default=None, help="write the folder that would be uploaded to OUT "
                                                                   "and send nothing")
    p.set_defaults(func=cmd_push)


def push_run(run: str | Path, repo_id: str, dry_run: str | Path | None = None, **push_kw) -> str:
    """Upload ``run`` (see the module's docstring); with ``dry_run`` only write the folder there."""
    import tempfile

    if not is_hub_id(repo_id) or "/" not in repo_id:
        raise SoftPromptError(f"{repo_id!r} is not a Hub repository id (user/name)")
    adapter_dir = resolve_adapter_dir(run)
    run_dir = Path(run) if (Path(run) / "config.yaml").exists() else None
    if dry_run is not None:
        out = Path(dry_run)
        if out.exists() and any(out.iterdir()):
            raise SoftPromptError(f"{out} exists and is not empty; give a new folder (nothing is overwritten)")
        return str(prepare_upload(adapter_dir, out, repo_id, run_dir))
    with tempfile.TemporaryDirectory() as tmp:
        return push_folder(prepare_upload(adapter_dir, Path(tmp), repo_id, run_dir), repo_id, **push_kw)


def cmd_push(args) -> int:
    where = push_run(args.run, args.repo_id, args.dry_run, private=args.private or None, revision=args.revision)
    print(f"wrote the upload folder to {where} (nothing sent)" if args.dry_run else f"pushed: {where}")
    return 0
