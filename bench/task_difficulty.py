"""How hard a verifiable prompt source is for the base model: Pass@k (unbiased, n samples per prompt)
through eval-gen's own sampling and verifier. A task where exploration can matter has Pass@1 well
below 1 and Pass@n above Pass@1 but below 1 (issue 21: Pass@1 10-50%, Pass@10 < 90%).

    python bench/task_difficulty.py --source capitals --n 20 --num-eval 40 --k 1,2,5,10,20
"""

from __future__ import annotations

import argparse
import time

from _common import write_results

from softprompt import SoftPromptModel
from softprompt.commands.eval_gen import evaluate_generations
from softprompt.modeling.generation import GenerationConfig
from softprompt.tasks.prompts import PromptsSection, load_prompts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--source", default="capitals", help="a prompt source whose examples carry their answers")
    p.add_argument("--verifier", default="contains")
    p.add_argument("--n", type=int, default=10, help="samples per prompt")
    p.add_argument("--k", default="1,2,5,10")
    p.add_argument("--max-new-tokens", type=int, default=10)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-eval", type=int, default=40, help="held-out requests (the config's prompts.num_eval)")
    p.add_argument("--out", default="bench/results/task_difficulty.json")
    args = p.parse_args()

    model = SoftPromptModel.from_backbone(args.model)
    train, held_out = load_prompts(PromptsSection(source=args.source, num_train=100_000, num_eval=args.num_eval), seed=0)
    gen = GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, group_size=args.n,
                           chat=True, seed=args.seed)
    ks = [int(k) for k in args.k.split(",")]
    rows = {}
    for split, examples in (("held_out", held_out), ("all", train + held_out)):
        start = time.perf_counter()
        result = evaluate_generations(model, examples, gen, verifier=args.verifier, ks=ks, embedding_model=None)
        rows[split] = {"prompts": len(examples), "seconds": round(time.perf_counter() - start, 1),
                       **{f"pass@{k}": round(result.metrics[f"pass@{k}"], 4) for k in ks}}
        print(split, rows[split], flush=True)
    write_results({"model": args.model, "source": args.source, "verifier": args.verifier, "n": args.n,
                   "temperature": args.temperature, "max_new_tokens": args.max_new_tokens, "results": rows}, args.out)


if __name__ == "__main__":
    main()
