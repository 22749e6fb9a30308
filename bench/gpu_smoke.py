"""GPU smoke test: one short training run of every shipped experiment on one GPU.

    bash bench/gpu_smoke.sh                          # every shipped config at its paper preset
    bash bench/gpu_smoke.sh --only polychromic sst2_smollm2 --steps 3

For each shipped config (each training stage of a multi-stage one, in order, so a later stage
finds the run an earlier one trained), at its ``paper`` preset when it has one (model, sizes and
``model.dtype=bfloat16``), it runs ``train.max_steps`` optimizer steps (default 2: the first
warms up kernels and caches) with small evaluations, and records the seconds of each step, the
peak GPU memory over the steps, the backbone's dtype and the trainable weights' dtype in
``bench/results/gpu_smoke.json`` (written after every experiment, so a cut run keeps what it
measured). What did not run as the preset says is said in each row's ``notes``:

- a paper model that is not on this machine (no network here): the config's own model instead;
- a batch that does not fit the GPU: halved until it fits (the largest that fits is recorded);
- no GLUE data under ``../shared/data/glue`` or ``shared/data/glue``: a synthetic GLUE folder
  of the same layout (timings do not depend on the words).

A config that fails for another reason (e.g. one that reads a run trained by another config)
gets ``status: error`` with the message, and the rest go on. The schema is in
docs/benchmarks.md ("GPU smoke test"). Without a CUDA GPU it exits with status 2 and says so;
``--cpu`` runs it on the CPU anyway, to check the script (its times are not GPU times).
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import random
import resource
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NO_GPU = ("gpu_smoke: no CUDA GPU on this machine (torch.cuda.is_available() is False). It measures step time and "
          "GPU memory of the shipped experiments on one GPU: run it where there is one (--cpu runs it on the CPU "
          "anyway, to check the script).")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", default=None, help="config names to run (default: every shipped config)")
    p.add_argument("--preset", default="paper", help="preset to use where a config has it ('none': no preset)")
    p.add_argument("--steps", type=int, default=2, help="optimizer steps per experiment")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu_smoke.json"))
    p.add_argument("--cpu", action="store_true", help="run on the CPU (checks the script; times are not GPU times)")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- data


def glue_dir(workdir: Path) -> tuple[str, str | None]:
    """(the GLUE folder to use, a note when it is a synthetic stand-in)."""
    for candidate in (Path("../shared/data/glue"), ROOT / "shared" / "data" / "glue",
                      ROOT.parent / "shared" / "data" / "glue"):
        if (candidate / "SST-2" / "train.tsv").is_file():
            return str(candidate.resolve()), None
    return str(synthetic_glue(workdir / "glue")), "no GLUE data here: a synthetic GLUE folder of the same layout"


def synthetic_glue(root: Path, train: int = 512, dev: int = 64) -> Path:
    """Every GLUE task's train.tsv / dev.tsv in the layout softprompt reads, random words, balanced labels."""
    from softprompt.tasks.data import GLUE_FORMATS

    words = ["the", "a", "movie", "film", "story", "plot", "actors", "was", "is", "great", "good", "bad", "awful",
             "fun", "boring", "really", "very", "not", "it", "this", "that", "and", "but", "with", "of", "to", "in",
             "loved", "hated", "wonderful", "terrible", "scene", "music", "ending", "long", "short"]
    rng = random.Random(0)

    def sentence() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(10, 18))) + " ."

    for fmt in GLUE_FORMATS.values():
        folder = root / fmt.folder
        folder.mkdir(parents=True, exist_ok=True)
        names = list(fmt.labels) if fmt.labels else None
        for split, n in (("train", train), ("dev", dev)):
            rows = []
            for i in range(n):
                label = f"{rng.uniform(0, 5):.2f}" if names is None else names[i % len(names)]
                values = {fmt.text: sentence(), fmt.label: label, "index": str(i), "source": "gj04",
                          "original_judgement": ""}
                if fmt.text_pair:
                    values[fmt.text_pair] = sentence()
                rows.append("\t".join(values.get(c, "") for c in fmt.columns))
            header = ["\t".join(fmt.columns)] if fmt.header else []
            (folder / f"{split}.tsv").write_text("\n".join(header + rows) + "\n")
    return root


# --------------------------------------------------------------------------- models


def available(spec: str) -> str | None:
    """None when model ``spec`` can be loaded here, else why not (a hub id not in the local cache:
    this machine has no network, whatever HF_HUB_OFFLINE says)."""
    from softprompt.errors import ModelLoadError
    from softprompt.modeling.backbones import check_model_spec, hub_cached_file, resolve

    try:
        check_model_spec(spec)
        path, _, gguf = resolve(spec)
    except ModelLoadError as e:
        return str(e)
    if gguf is None and not Path(path).is_dir() and hub_cached_file(path) is None:
        return f"{spec} is not on this machine (not in the Hugging Face cache)"
    return None


# --------------------------------------------------------------------------- one experiment


def is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def measure(config, label: str, gpu: bool) -> dict:
    """Train ``config`` for its ``train.max_steps`` steps; what each step cost."""
    import torch

    from softprompt.modeling.precision import dtype_name
    from softprompt.training.assemble import make_trainer

    if gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    trainer = make_trainer(config, progress=False)
    trainer.work.evaluate_before = False  # the steps are what is measured
    steps: list[dict] = []

    def on_step(logs: dict) -> None:
        if gpu:
            torch.cuda.synchronize()
        steps.append({"seconds": logs["step_seconds"], "loss": logs["loss"],
                      "peak": torch.cuda.max_memory_allocated() if gpu else None})
    trainer.on_step = on_step
    try:
        trainer.fit(progress=False)
        model = trainer.clf.model
        trainable = trainer.clf.trainable_parameters()
        timed = [s["seconds"] for s in steps[1:]] or [s["seconds"] for s in steps]
        peaks = [s["peak"] for s in steps if s["peak"] is not None]
        return {
            "experiment": label, "status": "ok", "method": config.method_name, "model": config.model.name,
            "adapter": config.adapter.adapter_type, "batch": config.train.batch,
            "dtype": dtype_name(model.compute_dtype),
            "trainable_dtypes": sorted({dtype_name(p.dtype) for p in trainable}),
            "trainable_parameters": sum(p.numel() for p in trainable),
            "backbone_parameters": sum(p.numel() for p in model.model.parameters()),
            "steps": len(steps), "step_seconds": [round(s["seconds"], 4) for s in steps],
            "step_s": round(sum(timed) / len(timed), 4) if timed else None,
            "peak_gpu_memory_gb": round(max(peaks) / 2 ** 30, 3) if peaks else None,
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 3),
            "loss": steps[-1]["loss"] if steps else None,
            "run_folder": str(trainer.run_path),
        }
    finally:
        del trainer
        free_memory()


def run_one(make_config, label: str, gpu: bool, notes: list[str]) -> dict:
    """``make_config(extra_overrides)`` -> config; train it, halving ``train.batch`` on out-of-memory."""
    import shutil

    from softprompt.runs.folder import run_root

    extra: list[str] = []
    config = make_config(extra)
    paper_batch = config.train.batch
    while True:
        try:
            row = measure(config, label, gpu)
            break
        except Exception as e:
            if not is_oom(e) or config.train.batch == 1:
                raise
            folder = run_root(config) / config.run_id
            shutil.rmtree(folder, ignore_errors=True)  # the attempt's run folder: the retry takes its place
            free_memory()
            extra = [f"train.batch={config.train.batch // 2}"]
            config = make_config(extra)
    if config.train.batch != paper_batch:
        notes.append(f"train.batch={paper_batch} does not fit the GPU: the largest that fit is {config.train.batch}")
    row["notes"] = list(notes)
    return row


# --------------------------------------------------------------------------- the shipped experiments


def shipped(only: list[str] | None) -> list[str]:
    from softprompt.config import config_names

    names = config_names()
    if only:
        missing = [n for n in only if n not in names]
        if missing:
            raise SystemExit(f"gpu_smoke: no shipped config {missing} (shipped: {', '.join(names)})")
        names = [n for n in names if n in only]
    return names


def experiment_rows(name: str, args, place: list[str], short: list[str], data_note: str | None,
                    gpu: bool) -> list[dict]:
    """``place``: where the runs go (output_dir, run_id); ``short``: the overrides that keep a run
    short. A pipeline's preset may set a stage's keys (``ppo.train.max_steps=500``), which win over
    plain keys: there ``short`` goes to each training stage by name."""
    from softprompt.commands.stages import load_pipeline
    from softprompt.config import load_config
    from softprompt.experiment import resolve

    raw = load_config(name)
    preset = args.preset if args.preset in (raw.get("presets") or {}) else None
    base_notes = [data_note] if data_note else []
    if preset is None and args.preset != "none":
        base_notes.append(f"no {args.preset!r} preset: the config as shipped")
    rows = []
    if load_pipeline(name, place, preset=None, progress=False) is None:
        common = [*place, *short]
        notes = list(base_notes)
        fallback = _fallback(resolve(name, common, preset=preset), resolve(name, common), notes)
        def make(extra, name=name, fallback=fallback):
            return resolve(name, [*common, *fallback, *extra], preset=preset)

        rows.append(_guarded(make, name, preset, gpu, notes))
        return rows
    plain = load_pipeline(name, place, preset=None, progress=False)
    stages = [s.name for s in plain.stages if s.action is None]
    common = [*place, *(f"{s}.{o}" for s in stages for o in short)]
    plain = load_pipeline(name, common, preset=None, progress=False)
    fallbacks: list[str] = []  # stages that fell back to their own model: later stages' ${stage} follow
    for stage in stages:
        notes = list(base_notes)
        wanted = load_pipeline(name, [*common, *fallbacks], preset=preset, progress=False).configs[stage]
        fallbacks += [f"{stage}.{o}" for o in _fallback(wanted, plain.configs[stage], notes)]
        make = functools.partial(_stage_config, name, [*common, *fallbacks], preset, stage)
        rows.append(_guarded(make, f"{name}/{stage}", preset, gpu, notes))
    return rows


def _stage_config(name: str, overrides: list[str], preset: str | None, stage: str, extra: list[str]):
    """Training stage ``stage`` of pipeline ``name``, ``extra`` overrides addressed to it."""
    from softprompt.commands.stages import load_pipeline

    more = [f"{stage}.{o}" for o in extra]
    return load_pipeline(name, [*overrides, *more], preset=preset, progress=False).configs[stage]


def _fallback(wanted, shipped_config, notes: list[str]) -> list[str]:
    """Overrides that swap a preset's model for the config's own when the former is not here."""
    why = available(wanted.model.name)
    if why is None or wanted.model.name == shipped_config.model.name:
        return []
    notes.append(f"{why}: ran {shipped_config.model.name} (the config's own model) at the preset's other settings")
    return [f"model.name={shipped_config.model.name}"]


def _guarded(make, label: str, preset: str | None, gpu: bool, notes: list[str]) -> dict:
    start = time.perf_counter()
    try:
        row = run_one(make, label, gpu, notes)
    except Exception as e:  # noqa: BLE001  (whatever failed is recorded; the other experiments go on)
        first = str(e).splitlines()[0] if str(e) else ""
        row = {"experiment": label, "status": "error", "error": f"{type(e).__name__}: {first}", "notes": notes,
               "traceback": traceback.format_exc(limit=6)}
        free_memory()
    row["preset"] = preset
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def environment(gpu: bool) -> dict:
    import torch
    import transformers

    import softprompt
    from softprompt.modeling.precision import cpu_features

    env = {"torch": torch.__version__, "transformers": transformers.__version__,
           "softprompt": getattr(softprompt, "__version__", None), "python": sys.version.split()[0],
           "cpu": cpu_features()}
    if gpu:
        props = torch.cuda.get_device_properties(0)
        env["gpu"] = {"name": props.name, "memory_gb": round(props.total_memory / 2 ** 30, 1),
                      "capability": f"{props.major}.{props.minor}", "count": torch.cuda.device_count(),
                      "bf16_supported": torch.cuda.is_bf16_supported(), "cuda": torch.version.cuda}
    return env


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    gpu = torch.cuda.is_available()
    if not gpu and not args.cpu:
        print(NO_GPU, file=sys.stderr)
        return 2
    names = shipped(args.only)
    out = Path(args.out)
    results = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "device": "cuda" if gpu else "cpu",
               "preset": args.preset, "steps_per_experiment": args.steps, "environment": environment(gpu),
               "experiments": []}
    with tempfile.TemporaryDirectory(prefix="gpu_smoke-") as tmp:
        data, data_note = glue_dir(Path(tmp))
        short = [f"train.max_steps={args.steps}", "task.max_eval_examples=8", "prompts.num_eval=2",
                 "generation.eval_samples=1"]
        if data_note:
            short += [f"task.data_dir={data}", f"prompts.data_dir={data}"]
        place = [f"output_dir={tmp}/runs", "run_id=smoke"]
        for name in names:
            print(f"gpu_smoke: {name}", flush=True)
            for row in experiment_rows(name, args, place, short, data_note, gpu):
                results["experiments"].append(row)
                shown = (f"{row['step_s']} s/step, peak {row['peak_gpu_memory_gb']} GB, {row['dtype']}"
                         if row["status"] == "ok" else row["error"])
                print(f"  {row['experiment']}: {row['status']}: {shown}", flush=True)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(results, indent=2) + "\n")
    ok = sum(r["status"] == "ok" for r in results["experiments"])
    print(f"gpu_smoke: {ok} of {len(results['experiments'])} experiments ran; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
