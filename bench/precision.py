"""What bf16 costs: quality against fp32, and speed, on SmolLM2-135M-Instruct, in one run.

    python bench/precision.py --glue-dir ../shared/data/glue

Quality (the same on any CPU up to the order of fp32 accumulation; it is bf16's 8-bit mantissa
that decides it):

- next-token KL(fp32 || bf16) over every position of SST-2 dev sentences (teacher-forced, the
  backbone alone), its mean, 99th percentile and max, and how often the two argmax tokens agree;
- SST-2 dev accuracy of the packaged judge (`packaged:sst2_judge_smollm2`, the reward of the
  sentiment experiments) with its backbone in bf16 vs fp32, and how often its labels agree.

Speed: the judge's evaluation examples/s in each dtype; their ratio is bf16's speed-up on this
CPU (below 1 where bf16 is emulated: no AMX, no AVX512-BF16). Both go through the library's
own low-precision path (`model.dtype`: bf16 weights, fp32 adapter, autocast, fp32 log-softmax).
Writes bench/results/precision.json with the CPU's instruction sets.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _common import write_results

JUDGE = "packaged:sst2_judge_smollm2"


@torch.no_grad()
def next_token_logprobs(model, tok, texts: list[str], batch: int) -> list[torch.Tensor]:
    """Per sentence: (tokens, vocab) fp32 log-probs of every next token."""
    out = []
    for b in range(0, len(texts), batch):
        enc = tok(texts[b:b + batch], return_tensors="pt", padding=True)
        logits = model(enc["input_ids"], enc["attention_mask"]).logits.float()
        for row, mask in zip(logits, enc["attention_mask"]):
            out.append(torch.log_softmax(row[mask.bool()], -1))
    return out


def kl_stats(p: list[torch.Tensor], q: list[torch.Tensor]) -> dict:
    """KL(p || q) per position, in nats, and argmax agreement."""
    kl = torch.cat([(a.exp() * (a - b)).sum(-1) for a, b in zip(p, q)])
    agree = torch.cat([a.argmax(-1) == b.argmax(-1) for a, b in zip(p, q)]).float()
    return {"positions": kl.numel(), "kl_mean": kl.mean().item(), "kl_p99": kl.quantile(0.99).item(),
            "kl_max": kl.max().item(), "argmax_agreement": agree.mean().item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--glue-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"))
    parser.add_argument("--sentences", type=int, default=200, help="SST-2 dev sentences for the KL")
    parser.add_argument("--judge-examples", type=int, default=872, help="SST-2 dev examples for the judge (all: 872)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "precision.json"))
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    from softprompt import SoftPromptModel, load_backbone
    from softprompt.runs.loading import load_trained_classifier
    from softprompt.tasks import load_split
    from softprompt.training.evaluation import evaluate

    dev = load_split("sst2", "dev", data_dir=args.glue_dir)
    texts = [e.text for e in dev[:args.sentences]]
    results: dict = {"model": args.model, "dtype": args.dtype, "sentences": len(texts)}

    logprobs = {}
    for dtype in ("float32", args.dtype):
        backbone = load_backbone(args.model, dtype=dtype)
        logprobs[dtype] = next_token_logprobs(SoftPromptModel(backbone), backbone.tokenizer, texts, 16)
        del backbone
    results.update(kl_stats(logprobs["float32"], logprobs[args.dtype]))
    del logprobs
    print({k: results[k] for k in ("positions", "kl_mean", "kl_p99", "kl_max", "argmax_agreement")}, flush=True)

    judged = {}
    for dtype in ("float32", args.dtype):
        clf, task, _ = load_trained_classifier(JUDGE, "sst2", dtype=dtype)
        start = time.perf_counter()
        metrics, rows = evaluate(clf, task, dev[:args.judge_examples], 32, 128)
        seconds = time.perf_counter() - start
        judged[dtype] = [r["predicted"] for r in rows]
        results[f"judge_accuracy_{dtype}"] = metrics["eval_accuracy"]
        results[f"judge_examples_s_{dtype}"] = len(rows) / seconds
        print(f"judge {dtype}: accuracy {metrics['eval_accuracy']:.4f}, {len(rows) / seconds:.1f} examples/s", flush=True)
        del clf
    results["judge_examples"] = min(args.judge_examples, len(dev))
    results["judge_accuracy_change"] = results[f"judge_accuracy_{args.dtype}"] - results["judge_accuracy_float32"]
    results["judge_label_agreement"] = sum(a == b for a, b in zip(judged["float32"], judged[args.dtype])) / len(
        judged["float32"])
    results["judge_speedup"] = results[f"judge_examples_s_{args.dtype}"] / results["judge_examples_s_float32"]

    table = Table(title=f"{args.dtype} vs float32, {args.model}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key in ("positions", "kl_mean", "kl_p99", "kl_max", "argmax_agreement", "judge_accuracy_float32",
                f"judge_accuracy_{args.dtype}", "judge_label_agreement", "judge_examples_s_float32",
                f"judge_examples_s_{args.dtype}", "judge_speedup"):
        value = results[key]
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    Console().print(table)
    write_results(results, args.out)


if __name__ == "__main__":
    main()
