"""The ``softprompt`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from ..errors import SoftPromptError
from ..modeling.backbones import load_backbone
from ..modeling.model import SoftPromptModel
from ..runs import RunFolder
from ..tasks import load_split
from ..tasks.preferences import pairs_from_labels, write_preferences
from ..training.assemble import make_trainer
from .compare import compare
from .config_reference import reference
from .configs import format_list, list_configs, show_config
from .convert_weights import convert_weights
from .eval_gen import eval_gen_run
from .evaluate import evaluate_tasks
from .export import add_export, add_push
from .stages import Pipeline, load_source
from .sweep import sweep


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="generate text from a backbone, optionally with a trained adapter")
    p.add_argument("--model", default=None, help="alias, local dir, .gguf file or hub id (default: the adapter's)")
    p.add_argument("--adapter", default=None, help="adapter directory or run folder")
    p.add_argument("--prompt", nargs="+", required=True, help="one or more prompts")
    p.add_argument("--chat", action="store_true", help="wrap each prompt in the model's chat template")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--num-generations", "--num-samples", dest="num_samples", type=int, default=1,
                   help="samples per prompt (shares the prompt's cache); --num-samples is the older spelling")
    p.add_argument("--stop", nargs="*", default=[], help="stop strings")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_generate)


def cmd_generate(args) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if args.adapter is None and args.model is None:
        raise SoftPromptError("give --model, --adapter, or both")
    with console.status("loading model"):
        if args.adapter is not None:
            model = SoftPromptModel.from_pretrained(args.adapter, backbone=args.model)
        else:
            model = SoftPromptModel(load_backbone(args.model))
    if not model.backbone.is_causal:
        raise SoftPromptError(f"model {model.backbone.spec!r} is an encoder; generate needs a causal LM")
    start = time.perf_counter()
    with console.status("generating"):
        out = model.generate(
            args.prompt, max_new_tokens=args.max_new_tokens, do_sample=not args.greedy,
            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, group_size=args.num_samples,
            stop_strings=args.stop, seed=args.seed, chat=args.chat,
        )
    seconds = time.perf_counter() - start
    table = Table(show_lines=True)
    table.add_column("prompt", style="cyan", max_width=40)
    table.add_column("completion")
    table.add_column("end", style="dim")
    for i, text in enumerate(out.texts):
        table.add_row(out.prompts[int(out.prompt_index[i])], text.strip(), out.finish_reasons[i])
    console.print(table)
    console.print(f"[dim]{out.num_tokens} tokens in {seconds:.1f} s ({out.num_tokens / seconds:.1f} tokens/s)[/dim]")
    return 0


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train an adapter from a YAML experiment config with key=value overrides")
    p.add_argument("--config-name", "--config", dest="config_name", default=None,
                   help="a config name (softprompt configs lists them: ./configs, then the shipped ones), "
                        "e.g. sst2_smollm2, or a path to a .yaml file")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.batch=4 method.k_negatives=1")
    p.add_argument("--preset", default=None, help="apply the config's named preset first, e.g. 'paper': the "
                                                  "source's model and sizes (see the config's presets)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a run from its latest checkpoint (checkpoints/last, or a later step-<N>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--num-processes", type=int, default=1,
                   help="data-parallel processes on this machine (torch.distributed.run: gloo on CPU, NCCL on GPUs)")
    p.set_defaults(func=cmd_train)


def _relaunch(n: int, argv: list[str]) -> int:
    """Run this same command in ``n`` processes under torch.distributed.run (what accelerate's
    multi-GPU launcher runs too); each process trains its shard of every batch."""
    import os
    import subprocess

    if n < 1:
        raise SoftPromptError(f"--num-processes {n}: expected at least 1")
    keep, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--num-processes":
            skip = True
            continue
        if a.startswith("--num-processes="):
            continue
        keep.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
           "-m", "softprompt", *keep]
    return subprocess.call(cmd, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})


def cmd_train(args) -> int:
    import os

    from rich.console import Console

    if args.num_processes != 1 and "WORLD_SIZE" not in os.environ:
        return _relaunch(args.num_processes, args.argv)

    console = Console()
    if args.resume:
        if args.overrides or args.config_name:
            raise SoftPromptError("--resume takes the run's own config.yaml; drop --config-name and overrides")
        config = RunFolder(args.resume).read_config()
    else:
        if not args.config_name:
            raise SoftPromptError("give --config-name NAME (softprompt configs lists them) or --resume RUN_DIR")
        # the config is read once: a run's config, or a pipeline of stages
        config = pipe = load_source(args.config_name, args.overrides, args.preset, console, not args.no_progress)
        if isinstance(pipe, Pipeline):  # a config with stages: run them all
            if args.num_processes != 1:
                raise SoftPromptError("--num-processes applies to one training run; a pipeline runs its stages "
                                      "in this process")
            pipe.check_models()  # before naming a folder that would not be made
            console.print(f"pipeline folder: [bold]{pipe.path}[/bold]")
            pipe.run()
            console.print((pipe.path / "summary.md").read_text())
            return 0
    trainer = make_trainer(config, resume=args.resume, progress=not args.no_progress)
    code = _fit_and_report(trainer, console, args)
    _close_process_group()  # after a clean finish only: a rank that failed must not wait for the others
    return code


def _close_process_group() -> None:
    """Every rank leaves together: a rank that exits while the others still run a collective (or
    with gloo's threads alive) can abort ("terminate called without an active exception")."""
    import torch.distributed as torch_dist

    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()


def _fit_and_report(trainer, console, args) -> int:
    from rich.table import Table

    if not trainer.dist.is_main:  # rank 0 reports
        trainer.fit(progress=False)
        return 0
    console.print(f"run folder: [bold]{trainer.run_path}[/bold]"
                  + (f" ({trainer.dist.world} processes)" if trainer.dist.enabled else ""))
    metrics = trainer.fit(progress=not args.no_progress)
    table = Table(title="final evaluation (best checkpoint)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    return 0


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a run / adapter, or the base model alone, on GLUE tasks")
    p.add_argument("run", nargs="?", default=None, help="run folder or adapter directory (omit with --model)")
    p.add_argument("--task", required=True, help="comma-separated tasks: cola,sst2,stsb,mrpc,rte,wnli")
    p.add_argument("--model", default=None, help="backbone spec (default: the adapter's); alone: the base model")
    p.add_argument("--data-dir", default=None, help="GLUE-layout folder (default: the run's task.data_dir, else "
                                                    "$SOFTPROMPT_DATA, else the hub's nyu-mll/glue)")
    p.add_argument("--split", default="dev")
    p.add_argument("--max-samples", type=int, default=None)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--save-predictions", default=None, metavar="DIR", help="write <task>.jsonl and metrics.json")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    tasks = [t.strip() for t in args.task.split(",") if t.strip()]
    with console.status("evaluating"):
        results = evaluate_tasks(tasks, args.run, args.model, args.data_dir, args.split, args.max_samples,
                                 args.batch, args.save_predictions)
    table = Table(title=f"evaluation of {args.run or args.model} ({args.split})")
    table.add_column("task")
    table.add_column("metrics")
    table.add_column("examples/s", justify="right")
    for task, m in results.items():
        shown = ", ".join(f"{k.removeprefix('eval_')} {v:.4f}" for k, v in m.items()
                          if k not in ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second"))
        table.add_row(task, shown, f"{m['eval_samples_per_second']:.1f}")
    console.print(table)
    return 0


def _add_make_preferences(sub) -> None:
    p = sub.add_parser("make-preferences", help="build a preference file (prompt/chosen/rejected) from a labelled "
                                                "classification set, e.g. SST-2: positive chosen over negative")
    p.add_argument("--task", default="sst2", help="GLUE task (default: sst2)")
    p.add_argument("--data-dir", default=None, help="GLUE-layout folder (default: $SOFTPROMPT_DATA, else the "
                                                    "hub's nyu-mll/glue)")
    p.add_argument("--split", default="train", help="split to read (train or dev)")
    p.add_argument("--out", required=True, help="output file: .jsonl, .csv or .xlsx")
    p.add_argument("--positive-label", type=int, default=1, help="class whose texts are chosen")
    p.add_argument("--min-words", type=int, default=4, help="shortest text used, in words")
    p.add_argument("--max-pairs", type=int, default=None)
    p.add_argument("--prompt", default="", help="context written in every row's prompt column")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_make_preferences)


def cmd_make_preferences(args) -> int:
    examples = load_split(args.task, args.split, data_dir=args.data_dir)
    pairs = pairs_from_labels(examples, args.positive_label, args.seed, args.max_pairs, args.min_words,
                              context=args.prompt)
    path = write_preferences(pairs, args.out)
    gap = sum(abs(len(p.chosen.split()) - len(p.rejected.split())) for p in pairs) / len(pairs)
    print(f"wrote {len(pairs)} pairs to {path} (mean length gap {gap:.2f} words)")
    return 0


def _add_eval_gen(sub) -> None:
    p = sub.add_parser("eval-gen", help="sample n completions per prompt from a trained run: diversity, Pass@k "
                                        "and the generations")
    p.add_argument("run", help="run folder of a generation method (grpo, ppo, polychromic, ...)")
    p.add_argument("--prompts", default=None,
                   help=".txt/.jsonl/.csv prompt file (default: the run's held-out prompts); on a conditional run, "
                        "a file without the condition field has each prompt sampled under every prompts.conditions")
    p.add_argument("--num-generations", "--n", dest="n", type=int, default=10, help="samples per prompt (or --n)")
    p.add_argument("--k", default="1,5,10", help="comma-separated k for Pass@k (each <= n), or all: every k from 1 to n")
    p.add_argument("--verifier", default=None,
                   help="exact[:FIELD], contains[:FIELD], regex:PATTERN, judge>=T or reward>=T (default: judge>=0.5 "
                        "if the run has one)")
    p.add_argument("--base", action="store_true", help="the run's backbone without its adapter")
    p.add_argument("--max-prompts", type=int, default=None)
    p.add_argument("--temperature", type=float, default=None, help="default: the run's")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the run's")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: the run's)")
    p.add_argument("--embedding-model", default="minilm-l6", help="for embedding diversity; 'none' to skip")
    p.add_argument("--max-embed-per-set", type=int, default=None,
                   help="embed a seeded sample of at most this many of each prompt's samples (an unbiased estimate "
                        "of embedding diversity; encoding is the slow part)")
    p.add_argument("--backend", choices=["native", "vllm"], default=None,
                   help="what samples: softprompt's generation or a vLLM engine with the soft prompt as prompt_embeds "
                        "(default: the run's generation.backend)")
    p.add_argument("--out", default=None, help="output folder (default: RUN/eval_gen, or RUN/eval_gen_base)")
    p.set_defaults(func=cmd_eval_gen)


def cmd_eval_gen(args) -> int:
    from rich.console import Console
    from rich.table import Table

    if args.n < 1:
        raise SoftPromptError(f"--n {args.n}: expected at least 1 sample per prompt")
    metrics, out = eval_gen_run(args.run, args.prompts, args.n, args.k, args.verifier, args.out, args.base,
                                args.max_prompts, args.temperature, args.max_new_tokens, args.seed,
                                None if args.embedding_model == "none" else args.embedding_model,
                                max_embed_per_set=args.max_embed_per_set, backend=args.backend)
    table = Table(title=f"{metrics['num_prompts']} prompts x {metrics['n']} samples ({metrics['verifier']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if isinstance(value, float):
            table.add_row(key, f"{value:.4f}")
    Console().print(table)
    print(f"wrote {out}/metrics.json and {out}/generations.jsonl")
    return 0


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="baseline vs variants: report.md/.html with every metric, deltas in %%, "
                                       "mean ± std over seeds, training-curve and trade-off plots")
    p.add_argument("runs", nargs="+", help="run folders (several seeds of one config are grouped)")
    p.add_argument("--baseline", default=None, help="the baseline run (default: the first)")
    p.add_argument("--out", default=None, help="report folder (default: compare-<time> next to the runs)")
    p.add_argument("--force", action="store_true", help="compare runs of different tasks anyway")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    out = compare(args.runs, args.baseline, args.out, args.force)
    print(f"wrote {out}/report.md and {out}/report.html")
    return 0


def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="run one config over several values and seeds (a=1,2 b=x,y: every "
                                     "combination), then the compare report")
    p.add_argument("--config-name", "--config", dest="config_name", required=True)
    p.add_argument("overrides", nargs="*", help="key=value or key=v1,v2,v3 (swept)")
    p.add_argument("--name", default=None, help="prefix of the run ids (default: the config's name)")
    p.add_argument("--eval-gen", action="store_true", help="run eval-gen on each run before the report")
    p.add_argument("--num-generations", "--n", dest="n", type=int, default=10,
                   help="eval-gen: samples per prompt (or --n)")
    p.add_argument("--k", default="1,5,10", help="eval-gen: Pass@k (comma-separated, or all)")
    p.add_argument("--verifier", default=None, help="eval-gen: verifier (see eval-gen --help)")
    p.add_argument("--no-report", action="store_true", help="skip the compare report")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args) -> int:
    from rich.console import Console

    console = Console()
    eval_gen = {"n": args.n, "ks": args.k, "verifier": args.verifier} if args.eval_gen else None
    paths, out = sweep(args.config_name, args.overrides, args.name, eval_gen, not args.no_report,
                       not args.no_progress, console)
    console.print(f"{len(paths)} runs" + (f"; report: {out}/report.md" if out else ""))
    return 0


def _add_convert(sub) -> None:
    p = sub.add_parser("convert-weights", help="convert pickle weights (.bin/.pt/.pth, or a model directory's) to "
                                               "safetensors, reading them with torch.load(weights_only=True)")
    p.add_argument("path", help="a pickle weights file or a model directory")
    p.add_argument("--out", default=None, help="output file or folder (default: beside the input)")
    p.set_defaults(func=cmd_convert)


def cmd_convert(args) -> int:
    for path in convert_weights(args.path, args.out):
        print(f"wrote {path}")
    return 0


def _add_configs(sub) -> None:
    p = sub.add_parser("configs", help="list the experiment configs --config-name finds (./configs, then the "
                                       "shipped ones) with their descriptions; 'configs show NAME' prints one")
    p.set_defaults(func=cmd_configs)
    inner = p.add_subparsers(dest="configs_command")
    show = inner.add_parser("show", help="print a config as YAML, resolved with overrides, to copy and edit")
    show.add_argument("name", help="a config name or a .yaml path")
    show.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.batch=4")
    show.add_argument("--preset", default=None, help="apply the config's named preset first")
    show.add_argument("--raw", action="store_true", help="the file as written (comments kept), not resolved")
    show.set_defaults(func=cmd_configs_show)


def cmd_configs(args) -> int:
    print(format_list(list_configs()), end="")
    return 0


def cmd_configs_show(args) -> int:
    print(show_config(args.name, args.overrides, args.preset, args.raw), end="")
    return 0


def _add_reference(sub) -> None:
    p = sub.add_parser("config-reference", help="print the configuration reference (docs/configuration.md) "
                                                "generated from the config dataclasses' help")
    p.set_defaults(func=cmd_reference)


def cmd_reference(args) -> int:
    print(reference(), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="softprompt", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="show library logs")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_generate(sub)
    _add_train(sub)
    _add_eval(sub)
    _add_make_preferences(sub)
    _add_eval_gen(sub)
    _add_compare(sub)
    _add_sweep(sub)
    _add_convert(sub)
    add_export(sub)
    add_push(sub)
    _add_configs(sub)
    _add_reference(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and isinstance(getattr(args, "overrides", None), list) and not any(e.startswith("-") for e in extra):
        args.overrides += extra  # key=value after an option (show NAME --preset P a=1): overrides too
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.argv = argv
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not args.verbose:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    try:
        return args.func(args)
    except SoftPromptError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(str(e) or "interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
