"""Data-parallel scaling on this CPU: steps/s of 1 and 2 processes (gloo) on a tiny model, and
the all-reduce's share of the step time; and 2 processes with the backbone sharded (FSDP2,
``train.strategy=fsdp``, and DeepSpeed ZeRO-3, ``deepspeed``, when installed): steps/s and the
backbone parameters each rank holds.

    python bench/scaling.py [--steps 60] [--batch 16]

Both runs train the same config (a tiny random Llama, prompt tuning, MLE on a synthetic
SST-2-layout task, global batch ``--batch``) through ``softprompt train --num-processes N``;
steps/s is global steps over training time (metrics.json), the all-reduce share is the mean
``allreduce_seconds`` over the mean ``step_seconds`` of train_log.jsonl. Writes
bench/results/scaling.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results  # noqa: E402

WORDS = ["the movie was great", "i loved it", "really fun and good", "a great story", "so good", "great actors",
         "the movie was awful", "i hated it", "a boring plot", "bad actors", "not very good", "an awful story"]


def tiny_model(path: Path) -> None:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
    vocab = {w: i for i, w in enumerate(specials + sorted({w for s in WORDS for w in s.split()} | {":"}))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]",
                                  eos_token="[EOS]")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         pad_token_id=0, bos_token_id=2, eos_token_id=3)
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)


def run(root: Path, processes: int, steps: int, batch: int, strategy: str = "ddp") -> dict:
    import yaml

    run_id = f"p{processes}-{strategy}"
    cfg = {"model": str(root / "model"), "classifier": "verbalizer", "output_dir": str(root / "runs"), "run_id": run_id,
           "task": {"name": "sst2", "data_dir": str(root / "glue"), "template": "{text} :",
                    "label_words": [["bad", "awful"], ["good", "great"]]},
           "adapter": {"type": "prompt_tuning", "num_virtual_tokens": 8, "init": "random"},
           "method": {"name": "mle"},
           "train": {"batch": batch, "epochs": 1000, "max_steps": steps, "lr": 0.01, "eval_every": 10_000,
                     "strategy": strategy}}
    (root / f"{run_id}.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // processes))}
    env.pop("WORLD_SIZE", None)
    out = subprocess.run([sys.executable, "-m", "softprompt", "train", "--no-progress", "--config-name",
                          str(root / f"{run_id}.yaml"), "--num-processes", str(processes)],
                         env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    folder = root / "runs" / "model" / "sst2" / "mle" / run_id
    metrics = json.loads((folder / "metrics.json").read_text())
    logs = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()][5:]  # warm-up out
    step_s = statistics.fmean(r["step_seconds"] for r in logs)
    allreduce = statistics.fmean(r.get("allreduce_seconds", 0.0) for r in logs)
    info = json.loads((folder / "distributed.json").read_text()) if processes > 1 else {}
    return {"processes": processes, "strategy": strategy, "steps": metrics["global_step"],
            "backbone_parameters_per_rank": info.get("backbone_parameters_per_rank"), "train_time_sec": metrics["train_time_sec"],
            "steps_per_s": metrics["global_step"] / metrics["train_time_sec"], "mean_step_s": step_s,
            "mean_allreduce_s": allreduce, "allreduce_share": allreduce / step_s, "omp_threads": env["OMP_NUM_THREADS"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=16, help="global batch (split across processes)")
    ap.add_argument("--out", default="bench/results/scaling.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tiny_model(root / "model")
        (root / "glue" / "SST-2").mkdir(parents=True)
        rows = [f"{w}\t{int(i < 6)}" for i, w in enumerate(WORDS)] * 20
        for split in ("train", "dev"):
            (root / "glue" / "SST-2" / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
        results = [run(root, 1, args.steps, args.batch), run(root, 2, args.steps, args.batch),
                   run(root, 2, args.steps, args.batch, "fsdp")]
        if importlib.util.find_spec("deepspeed") is not None:  # pip install 'softprompt[deepspeed]'
            results.append(run(root, 2, args.steps, args.batch, "deepspeed"))
    for r in results:
        held = r["backbone_parameters_per_rank"]
        print(f"{r['processes']} process(es), {r['strategy']}: {r['steps_per_s']:.2f} steps/s, "
              f"step {r['mean_step_s'] * 1000:.1f} ms, all-reduce {r['mean_allreduce_s'] * 1000:.2f} ms "
              f"({r['allreduce_share']:.1%})" + (f", backbone parameters per rank {held}" if held else ""))
    one, ddp, *sharded = results
    ratios = {"speedup_2_over_1": ddp["steps_per_s"] / one["steps_per_s"]}
    ratios |= {f"{r['strategy']}_over_ddp_2_processes": r["steps_per_s"] / ddp["steps_per_s"] for r in sharded}
    print(f"2 processes / 1 process: {ratios['speedup_2_over_1']:.2f}x steps/s; "
          + "; ".join(f"{r['strategy']} / ddp (2 processes): {r['steps_per_s'] / ddp['steps_per_s']:.2f}x"
                      for r in sharded))
    write_results({"runs": results, **ratios, "global_batch": args.batch, "cpu_count": os.cpu_count()}, args.out)


if __name__ == "__main__":
    main()
