"""``softprompt export RUN_DIR OUT --format peft [--merge]``: a trained adapter in PEFT's format
(prompt tuning, prefix tuning, LoRA; ``peft.PeftModel.from_pretrained(base, OUT)`` loads it), or
with ``--merge`` a LoRA run as one standalone transformers model folder for serving."""

from __future__ import annotations

from pathlib import Path

from ..errors import SoftPromptError
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
