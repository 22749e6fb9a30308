"""SST-2 prompt-tuning speed and memory: softprompt vs PEFT, on the same batches, in one run.

    pip install -e ".[bench]" && python bench/classification.py --glue-dir ../shared/data/glue

Both train a 20-token prompt (text init, AdamW lr 3e-2) on SmolLM2-135M-Instruct with the
same template, label words, batches (batch 8) and dev examples. PEFT is used the way its
docs show for a causal LM: the label word is appended as the target token, right padding,
loss on that token; evaluation compares the label words' logits at the last prompt
position. softprompt uses its verbalizer classifier. Each system runs in its own child
process so peak RSS is its own. Writes bench/results/classification.json. The backbone runs in
fp32, and also in bf16 where the CPU computes bf16 natively (`--dtypes` forces a list); bf16 keys
carry `_bf16`, with each system's speed-up and accuracy change against its fp32 run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from _common import dtypes, suffix, write_results

TEMPLATE = "Review: {text}\nSentiment:"
WORDS = [" terrible", " great"]
INIT = "Classify the sentiment of the movie review as great or terrible."


def load(glue_dir: str, train_n: int, eval_n: int):
    from softprompt.tasks import load_split

    train = load_split("sst2", "train", data_dir=glue_dir)
    dev = load_split("sst2", "dev", data_dir=glue_dir)[:eval_n]
    import random

    random.Random(0).shuffle(train)
    return train[:train_n], dev


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_peft(args) -> dict:
    import torch
    from peft import PromptTuningConfig, PromptTuningInit, get_peft_model

    from softprompt import load_backbone

    torch.manual_seed(0)
    backbone = load_backbone(args.model, dtype=args.dtype)
    tok = backbone.tokenizer
    tok.padding_side = "right"
    model = get_peft_model(backbone.model, PromptTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=20, prompt_tuning_init=PromptTuningInit.TEXT,
        prompt_tuning_init_text=INIT, tokenizer_name_or_path=backbone.path))
    word_ids = [tok(w, add_special_tokens=False)["input_ids"][0] for w in WORDS]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    train, dev = load(args.glue_dir, args.steps * args.batch + 2 * args.batch, args.eval_examples)
    times = []
    model.train()
    for step in range(args.steps + 2):
        rows = train[step * args.batch:(step + 1) * args.batch]
        texts = [TEMPLATE.format(text=e.text) + WORDS[e.label] for e in rows]
        enc = tok(texts, return_tensors="pt", padding=True)
        labels = torch.full_like(enc["input_ids"], -100)
        last = enc["attention_mask"].sum(1) - 1  # the label word is the last real token
        labels[torch.arange(len(rows)), last] = enc["input_ids"][torch.arange(len(rows)), last]
        start = time.perf_counter()
        loss = model(**enc, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step >= 2:  # warm-up steps are not timed
            times.append(time.perf_counter() - start)
    model.eval()
    correct, start = 0, time.perf_counter()
    with torch.no_grad():
        for b in range(0, len(dev), args.eval_batch):
            rows = dev[b:b + args.eval_batch]
            enc = tok([TEMPLATE.format(text=e.text) for e in rows], return_tensors="pt", padding=True)
            logits = model(**enc).logits  # (B, 20 + L, V): virtual tokens come first
            last = enc["attention_mask"].sum(1) - 1 + 20
            scores = logits[torch.arange(len(rows)), last][:, word_ids]
            correct += int((scores.argmax(-1) == torch.tensor([e.label for e in rows])).sum())
    eval_s = time.perf_counter() - start
    return {"step_s": sum(times) / len(times), "eval_ex_s": len(dev) / eval_s, "accuracy": correct / len(dev),
            "rss_mb": peak_rss_mb()}


def run_softprompt(args) -> dict:
    import torch

    from softprompt import PromptTuningConfig, SoftPromptModel, load_backbone
    from softprompt.modeling.classifiers import VerbalizerClassifier
    from softprompt.objectives import OBJECTIVES, StepInputs
    from softprompt.objectives.mle import MLEConfig
    from softprompt.tasks import get_task
    from softprompt.training.evaluation import evaluate, make_batch

    torch.manual_seed(0)
    task = get_task("sst2")
    task = dataclasses.replace(task, template=TEMPLATE, label_words=[[w.strip()] for w in WORDS])
    model = SoftPromptModel.from_backbone(load_backbone(args.model, dtype=args.dtype),
                                          PromptTuningConfig(num_virtual_tokens=20, init=f"text:{INIT}"))
    clf = VerbalizerClassifier(model, task.label_words)
    mle = OBJECTIVES.get("mle")(MLEConfig())
    opt = torch.optim.AdamW(clf.trainable_parameters(), lr=3e-2)
    train, dev = load(args.glue_dir, args.steps * args.batch + 2 * args.batch, args.eval_examples)
    times = []
    clf.train()
    for step in range(args.steps + 2):
        rows = train[step * args.batch:(step + 1) * args.batch]
        start = time.perf_counter()
        loss = mle(StepInputs(make_batch(clf, task, rows, 128), clf)).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step >= 2:
            times.append(time.perf_counter() - start)
    metrics, _ = evaluate(clf, task, dev, args.eval_batch, 128)
    return {"step_s": sum(times) / len(times), "eval_ex_s": metrics["eval_samples_per_second"],
            "accuracy": metrics["eval_accuracy"], "rss_mb": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--glue-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--eval-examples", type=int, default=256)
    parser.add_argument("--eval-batch", type=int, default=32)
    parser.add_argument("--dtypes", default="auto", help="comma list of backbone dtypes (float32, bfloat16, "
                        "float16), or auto: float32, plus bfloat16 where the CPU computes it natively (AMX, AVX512-BF16)")
    parser.add_argument("--system", choices=["peft", "softprompt"], help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "classification.json"))
    args = parser.parse_args()
    if args.system:  # child process: one system, result as JSON on the last line
        print(json.dumps(run_peft(args) if args.system == "peft" else run_softprompt(args)))
        return

    results: dict = {"model": args.model, "steps": args.steps, "batch": args.batch,
                     "eval_examples": args.eval_examples, "dtypes": dtypes(args.dtypes)}
    for dtype in results["dtypes"]:
        for system in ("peft", "softprompt"):
            cmd = [sys.executable, __file__, "--system", system, "--dtype", dtype, *sys.argv[1:]]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            r = json.loads(out)
            for key, value in r.items():
                results[f"{system}{suffix(dtype)}_{key}"] = value
            print(f"{system} {dtype}: {r}", flush=True)
    for s in map(suffix, results["dtypes"]):
        results[f"step_ratio{s}"] = results[f"softprompt{s}_step_s"] / results[f"peft{s}_step_s"]
        results[f"eval_ratio{s}"] = results[f"softprompt{s}_eval_ex_s"] / results[f"peft{s}_eval_ex_s"]
        results[f"rss_ratio{s}"] = results[f"softprompt{s}_rss_mb"] / results[f"peft{s}_rss_mb"]
    for s in map(suffix, results["dtypes"][1:]):  # a low-precision run against the fp32 one, per system
        for system in ("peft", "softprompt"):
            results[f"{system}{s}_step_vs_fp32"] = results[f"{system}_step_s"] / results[f"{system}{s}_step_s"]
            results[f"{system}{s}_eval_vs_fp32"] = results[f"{system}{s}_eval_ex_s"] / results[f"{system}_eval_ex_s"]
            results[f"{system}{s}_accuracy_change"] = results[f"{system}{s}_accuracy"] - results[f"{system}_accuracy"]
    from rich.console import Console
    from rich.table import Table

    table = Table(title="SST-2 prompt tuning, SmolLM2-135M, same batches")
    for col in ("", "PEFT", "softprompt", "ratio", "target"):
        table.add_column(col, justify="right")
    for s in map(suffix, results["dtypes"]):
        table.add_row(f"train s/step{s}", f"{results[f'peft{s}_step_s']:.3f}", f"{results[f'softprompt{s}_step_s']:.3f}",
                      f"{results[f'step_ratio{s}']:.2f}x", "<= 0.5x")
        table.add_row(f"eval examples/s{s}", f"{results[f'peft{s}_eval_ex_s']:.1f}",
                      f"{results[f'softprompt{s}_eval_ex_s']:.1f}", f"{results[f'eval_ratio{s}']:.2f}x", ">= 3x")
        table.add_row(f"peak RSS MB{s}", f"{results[f'peft{s}_rss_mb']:.0f}", f"{results[f'softprompt{s}_rss_mb']:.0f}",
                      f"{results[f'rss_ratio{s}']:.2f}x", "<= 1x")
        table.add_row(f"accuracy{s}", f"{results[f'peft{s}_accuracy']:.3f}", f"{results[f'softprompt{s}_accuracy']:.3f}",
                      "", "")
    Console().print(table)
    write_results(results, args.out)


if __name__ == "__main__":
    main()
