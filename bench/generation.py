"""Generation speed: softprompt vs PEFT prompt tuning vs the plain model, in one run.

    pip install -e ".[bench]" && python bench/generation.py

SmolLM2-135M-Instruct (fp32, CPU), 16 SST-2-like prompts, 48 new tokens each (EOS ignored,
so every system does the same work), multinomial sampling at temperature 1, 20 virtual
tokens. Also G=4 samples per prompt: PEFT gets each prompt repeated 4 times, softprompt
prefills each prompt once and shares its cache. Reports generated tokens per second (best
of --repeats runs after a warm-up) and writes bench/results/generation.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _common import write_results

PROMPTS = [
    "it 's a charming and often affecting journey",
    "unflinchingly bleak and desperate",
    "allows us to hope that nolan is poised to embark a major career",
    "the acting , costumes , music , cinematography and sound are all astounding",
    "it 's slow -- very , very slow",
    "although laced with humor and a few fanciful touches , the film is",
    "a sometimes tedious film",
    "you do n't have to know about music to appreciate the film 's easygoing blend of comedy and romance",
    "in exactly 89 minutes , most of which passed as slowly as if i 'd been sitting naked on an igloo",
    "the mesmerizing performances of the leads keep the film grounded",
    "it takes a strange kind of laziness to waste the talents of robert forster",
    "a gorgeous , witty , seductive movie",
    "the story is far-flung , illogical , and plain stupid",
    "a thoughtful , provocative , insistently humanizing film",
    "there is a fabric of complex ideas here , and feelings that profoundly deepen them",
    "the entire movie is filled with deja vu moments",
]


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--virtual-tokens", type=int, default=20)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "generation.json"))
    args = parser.parse_args()

    from peft import PromptTuningConfig as PeftPromptTuningConfig
    from peft import get_peft_model
    from rich.console import Console
    from rich.table import Table

    from softprompt import PromptTuningConfig, SoftPromptModel, load_backbone

    torch.manual_seed(0)
    backbone = load_backbone(args.model)
    tok, base = backbone.tokenizer, backbone.model
    n_new, g = args.new_tokens, args.group
    enc = tok(PROMPTS, return_tensors="pt", padding=True)  # left padding
    enc_rep = tok([p for p in PROMPTS for _ in range(g)], return_tensors="pt", padding=True)

    def hf_generate(model, batch):
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=True, top_k=0,
                                 top_p=1.0, temperature=1.0, pad_token_id=tok.pad_token_id)
        return out

    ours = SoftPromptModel.from_backbone(backbone, PromptTuningConfig(num_virtual_tokens=args.virtual_tokens,
                                                                      init="vocab", init_seed=0))

    def ours_generate(group: int):
        out = ours.generate(PROMPTS, max_new_tokens=n_new, do_sample=True, temperature=1.0, group_size=group,
                            eos_token_ids=[])
        assert out.num_tokens == len(PROMPTS) * group * n_new
        return out

    rows = len(PROMPTS)
    results: dict = {"model": args.model, "prompts": rows, "new_tokens": n_new, "virtual_tokens": args.virtual_tokens,
                     "group": g, "threads": torch.get_num_threads(), "torch": torch.__version__}
    results["plain_tok_s"] = rows * n_new / best_time(lambda: hf_generate(base, enc), args.repeats)
    peft_model = get_peft_model(base, PeftPromptTuningConfig(task_type="CAUSAL_LM",
                                                             num_virtual_tokens=args.virtual_tokens)).eval()
    results["peft_tok_s"] = rows * n_new / best_time(lambda: hf_generate(peft_model, enc), args.repeats)
    results["peft_group4_tok_s"] = rows * g * n_new / best_time(lambda: hf_generate(peft_model, enc_rep),
                                                                args.repeats)
    base = peft_model.unload() if hasattr(peft_model, "unload") else base
    results["softprompt_tok_s"] = rows * n_new / best_time(lambda: ours_generate(1), args.repeats)
    results["softprompt_group4_tok_s"] = rows * g * n_new / best_time(lambda: ours_generate(g), args.repeats)

    # correctness in the same run: greedy with the KV cache equals greedy recomputing everything
    greedy = ours.generate(PROMPTS, max_new_tokens=16, do_sample=False, eos_token_ids=[])
    ids, mask = enc["input_ids"], enc["attention_mask"]
    with torch.no_grad():
        for _ in range(16):
            nxt = ours(ids, mask, logits_to_keep=1).logits[:, -1].argmax(-1, keepdim=True)
            ids, mask = torch.cat([ids, nxt], 1), torch.cat([mask, torch.ones_like(nxt)], 1)
    results["cache_equal"] = bool(torch.equal(greedy.completion_ids, ids[:, -16:]))

    results["ratio_vs_peft"] = results["softprompt_tok_s"] / results["peft_tok_s"]
    results["ratio_vs_plain"] = results["softprompt_tok_s"] / results["plain_tok_s"]
    results["group4_ratio_vs_peft"] = results["softprompt_group4_tok_s"] / results["peft_group4_tok_s"]

    table = Table(title=f"generation, {args.model}, {rows} prompts x {n_new} new tokens")
    table.add_column("system")
    table.add_column("tokens/s", justify="right")
    for key in ("plain_tok_s", "peft_tok_s", "softprompt_tok_s", "peft_group4_tok_s", "softprompt_group4_tok_s"):
        table.add_row(key.removesuffix("_tok_s"), f"{results[key]:.1f}")
    for key in ("ratio_vs_peft", "ratio_vs_plain", "group4_ratio_vs_peft"):
        table.add_row(key, f"{results[key]:.2f}x")
    table.add_row("cache_equal", str(results["cache_equal"]))
    Console().print(table)
    write_results(results, args.out)


if __name__ == "__main__":
    main()
