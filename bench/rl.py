"""GRPO step time on soft prompts: softprompt vs TRL's GRPOTrainer with a PEFT prompt, in one run.

    pip install -e ".[bench]" && python bench/rl.py

Identical settings for both: SmolLM2-135M-Instruct (CPU), a 20-token prompt started from
the same text, 8 prompts x G=4 completions per step, at most 32 new tokens (temperature 1),
beta 0 (no reference pass), one inner update, AdamW lr 1e-2 constant, VADER compound score as
the reward, the same review openings in the same order. TRL runs with gradient checkpointing
off (its default is on, which would only slow it down). Each system runs in its own child
process. Reports mean seconds per step over the steps after the first (warm-up), and the mean
reward over the first and last 5 steps. Writes bench/results/rl.json. The backbone runs in fp32, and
also in bf16 where the CPU computes bf16 natively (`--dtypes` forces a list; keys end in `_bf16`).

With an environment that has vLLM (`--vllm-python`, see bench/_common.py), the same run adds
softprompt with `generation.backend: vllm` (`softprompt_vllm_*`) and, as its control, the native
backend in that same environment (`softprompt_vllmenv_*`: vLLM pins an older transformers).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from _common import dtypes, suffix, vllm_child, vllm_python, write_results

INIT = "Write a glowing, enthusiastic movie review."


def prompts(glue_dir: str, n: int) -> list[str]:
    from softprompt.tasks.prompts import PromptsSection, load_prompts

    train, _ = load_prompts(PromptsSection(data_dir=glue_dir, num_train=n), seed=0)
    return [e.text for e in train]


def vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return lambda completions: [analyzer.polarity_scores(c)["compound"] for c in completions]


def summary(step_s: list[float], rewards: list[float]) -> dict:
    timed = step_s[1:] if len(step_s) > 1 else step_s
    return {"step_s": sum(timed) / len(timed), "reward_first5": sum(rewards[:5]) / len(rewards[:5]),
            "reward_last5": sum(rewards[-5:]) / len(rewards[-5:]), "steps": len(step_s),
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_softprompt(args) -> dict:
    import torch

    from softprompt.experiment import from_dict
    from softprompt.training.assemble import build_rl, seed_everything
    from softprompt.training.trainer import Trainer

    score = vader()
    items = prompts(args.glue_dir, args.steps * args.prompts)
    cfg = from_dict({
        "model": {"name": args.model, "dtype": args.dtype}, "seed": 0,
        "adapter": {"type": "prompt_tuning", "num_virtual_tokens": 20, "init": f"text:{INIT}"},
        "method": {"name": "grpo", "num_generations": args.group_size, "beta": 0.0, "num_iterations": 1},
        "prompts": {"source": "list", "items": items, "num_train": len(items), "num_eval": 1},
        "generation": {"max_new_tokens": args.max_new_tokens, "temperature": 1.0, "backend": args.backend},
        "train": {"batch": args.prompts, "epochs": 1, "max_steps": args.steps, "lr": args.lr, "warmup_ratio": 0.0,
                  "scheduler": "constant", "eval_every": 10_000, "shuffle": False},
    })
    seed_everything(0)
    start = time.perf_counter()
    work, data = build_rl(cfg, rewards=[lambda p, c, e: score(c)])  # with vllm: the engine starts here
    build_s = time.perf_counter() - start
    trainer = Trainer(cfg, work, data, run=None)
    work.evaluate_before = False
    steps, rewards = [], []
    trainer.on_step = lambda logs: (steps.append(logs["step_seconds"]), rewards.append(logs["reward"]))
    torch.manual_seed(0)
    gaps = []  # each step's (max, mean) |log p_trainer - log p_vllm| and k3 KL(vllm || trainer)
    if args.backend == "vllm":
        on_step = trainer.on_step
        trainer.on_step = lambda logs: (on_step(logs), gaps.append(
            (logs["vllm/logprob_diff_max"], logs["vllm/logprob_diff_mean"], logs["vllm/kl"])))
    trainer.fit(progress=False)
    engines = {"logprob_diff_max": max(g[0] for g in gaps), "logprob_diff_mean": sum(g[1] for g in gaps) / len(gaps),
               "kl_mean": sum(g[2] for g in gaps) / len(gaps)} if gaps else {}
    return {**summary(steps, rewards), "build_s": build_s, **engines}


def run_trl(args) -> dict:
    import torch
    from datasets import Dataset
    from peft import PromptTuningConfig, PromptTuningInit
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from softprompt import load_backbone

    score = vader()
    torch.manual_seed(0)
    backbone = load_backbone(args.model, dtype=args.dtype)
    items = prompts(args.glue_dir, args.steps * args.prompts)
    steps, rewards, started = [], [], [0.0]

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            started[0] = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            steps.append(time.perf_counter() - started[0])

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "reward" in logs:
                rewards.append(logs["reward"])

    config = GRPOConfig(
        output_dir=str(Path(args.tmp) / "trl"), per_device_train_batch_size=args.prompts * args.group_size,
        num_generations=args.group_size, max_completion_length=args.max_new_tokens, beta=0.0, num_iterations=1,
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, max_steps=args.steps,
        logging_steps=1, report_to="none", use_cpu=True, gradient_checkpointing=False, shuffle_dataset=False,
        temperature=1.0, save_strategy="no", seed=0, bf16=args.dtype == "bfloat16", disable_tqdm=True,
    )
    peft_config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=20,
                                     prompt_tuning_init=PromptTuningInit.TEXT, prompt_tuning_init_text=INIT,
                                     tokenizer_name_or_path=backbone.path)
    trainer = GRPOTrainer(model=backbone.model, reward_funcs=[lambda completions, **kw: score(completions)],
                          args=config, train_dataset=Dataset.from_dict({"prompt": items}),
                          processing_class=backbone.tokenizer, peft_config=peft_config, callbacks=[Timer()])
    trainer.train()
    return {**summary(steps, rewards), "peft_config": "PromptTuningConfig"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--glue-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--tmp", default="/tmp/softprompt-bench-rl")
    parser.add_argument("--dtypes", default="auto", help="comma list of backbone dtypes (float32, bfloat16), or "
                        "auto: float32, plus bfloat16 where the CPU computes it natively (AMX, AVX512-BF16)")
    parser.add_argument("--system", choices=["trl", "softprompt"], help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="native", help=argparse.SUPPRESS)
    parser.add_argument("--vllm-python", default=None, help="python of an environment with vLLM (default: "
                        "$SOFTPROMPT_VLLM_PYTHON, else the one the tests built; none: no vllm rows)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "rl.json"))
    args = parser.parse_args()
    if args.system:  # child process: one system, result as JSON on the last line
        print(json.dumps(run_trl(args) if args.system == "trl" else run_softprompt(args)))
        return

    results: dict = {"model": args.model, "steps": args.steps, "prompts_per_step": args.prompts,
                     "group_size": args.group_size, "max_new_tokens": args.max_new_tokens, "lr": args.lr,
                     "dtypes": dtypes(args.dtypes)}
    for dtype in results["dtypes"]:
        for system in ("softprompt", "trl"):
            cmd = [sys.executable, __file__, "--system", system, "--dtype", dtype, *sys.argv[1:]]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode:
                sys.stderr.write(proc.stderr[-3000:])
                raise SystemExit(f"{system} ({dtype}) failed (exit {proc.returncode})")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results["trl_peft_config" if system == "trl" else "_"] = r.pop("peft_config", None)
            for key, value in r.items():
                results[f"{system}{suffix(dtype)}_{key}"] = value
    results.pop("_", None)
    served = vllm_python(args.vllm_python)
    same = ["--model", args.model, "--glue-dir", args.glue_dir, "--steps", str(args.steps), "--prompts",
            str(args.prompts), "--group-size", str(args.group_size), "--max-new-tokens", str(args.max_new_tokens),
            "--lr", str(args.lr)]
    for dtype in results["dtypes"] if served else []:
        s = suffix(dtype)
        for backend, name in (("vllm", "softprompt_vllm"), ("native", "softprompt_vllmenv")):
            r = vllm_child(served, __file__, [*same, "--system", "softprompt", "--dtype", dtype, "--backend", backend])
            results["vllm_version"], results["vllm_env_transformers"] = r.pop("vllm_version"), \
                r.pop("vllm_env_transformers")
            results.update({f"{name}{s}_{key}": value for key, value in r.items()})
        results[f"ratio_vllm_to_native{s}"] = results[f"softprompt_vllm{s}_step_s"] / \
            results[f"softprompt_vllmenv{s}_step_s"]
        results[f"ratio_vllm_to_trl{s}"] = results[f"softprompt_vllm{s}_step_s"] / results[f"trl{s}_step_s"]
    for s in map(suffix, results["dtypes"]):
        results[f"ratio_softprompt_to_trl{s}"] = results[f"softprompt{s}_step_s"] / results[f"trl{s}_step_s"]
    for s in map(suffix, results["dtypes"][1:]):  # speed-up of a low-precision run over the fp32 one
        for system in ("softprompt", "trl"):
            results[f"{system}{s}_vs_fp32"] = results[f"{system}_step_s"] / results[f"{system}{s}_step_s"]
    print(json.dumps(results, indent=2))
    write_results(results, args.out)


if __name__ == "__main__":
    main()
