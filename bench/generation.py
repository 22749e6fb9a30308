"""Generation speed: softprompt vs PEFT prompt tuning vs the plain model, in one run.

    pip install -e ".[bench]" && python bench/generation.py

SmolLM2-135M-Instruct (CPU), 16 SST-2-like prompts, 48 new tokens each (EOS ignored,
so every system does the same work), multinomial sampling at temperature 1, 20 virtual
tokens. Also G=4 samples per prompt: PEFT gets each prompt repeated 4 times, softprompt
prefills each prompt once and shares its cache. Reports generated tokens per second (best
of --repeats runs after a warm-up) and writes bench/results/generation.json. The backbone runs in
fp32, and also in bf16 where the CPU computes bf16 natively (AMX or AVX512-BF16; `--dtypes`
forces a list): bf16 keys end in `_bf16`, and `<system>_bf16_vs_fp32` is its speed-up.

With an environment that has vLLM (`--vllm-python`, see bench/_common.py), the same run adds the
`vllm_*` rows: softprompt's vLLM backend (the soft prompt sent as `prompt_embeds`, the engine
compiled as it would be for training), G=1 and G=4 (`n=4`), in a child process of that environment.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _common import dtypes, suffix, vllm_child, vllm_python, write_results

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
    parser.add_argument("--dtypes", default="auto", help="comma list of backbone dtypes (float32, bfloat16, "
                        "float16), or auto: float32, plus bfloat16 where the CPU computes it natively (AMX, AVX512-BF16)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "generation.json"))
    parser.add_argument("--vllm-python", default=None, help="python of an environment with vLLM (default: "
                        "$SOFTPROMPT_VLLM_PYTHON, else the one the tests built; none: no vllm rows)")
    parser.add_argument("--system", choices=["vllm"], help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.system:  # child process in the vLLM environment: its rows as JSON on the last line
        print(json.dumps(measure_vllm(args)))
        return

    from rich.console import Console
    from rich.table import Table

    rows, n_new, g = len(PROMPTS), args.new_tokens, args.group
    results: dict = {"model": args.model, "prompts": rows, "new_tokens": n_new, "virtual_tokens": args.virtual_tokens,
                     "group": g, "threads": torch.get_num_threads(), "torch": torch.__version__,
                     "dtypes": dtypes(args.dtypes)}

    def record(key: str, value) -> None:  # each row is written when measured: a cut run keeps what it has
        results[key] = value
        print(f"{key}: {value}", flush=True)
        write_results({**results, "complete": False}, args.out, quiet=True)

    for dtype in results["dtypes"]:
        measure(args, dtype, record)
    served = vllm_python(args.vllm_python)
    for dtype in results["dtypes"] if served else []:
        s = suffix(dtype)
        same = ["--model", args.model, "--new-tokens", str(n_new), "--virtual-tokens", str(args.virtual_tokens),
                "--group", str(g), "--repeats", str(args.repeats)]
        r = vllm_child(served, __file__, [*same, "--system", "vllm", "--dtype", dtype])
        for key in ("vllm_version", "vllm_env_transformers", "vllm_engine_start_s"):
            record(key + (s if key == "vllm_engine_start_s" else ""), r.pop(key))
        for key, value in r.items():
            record(f"{key}{s}" if not key.endswith("_tok_s") else key.replace("_tok_s", f"{s}_tok_s"), value)
        record(f"vllm_vs_softprompt{s}", results[f"vllm{s}_tok_s"] / results[f"softprompt{s}_tok_s"])
        record(f"vllm_vs_plain{s}", results[f"vllm{s}_tok_s"] / results[f"plain{s}_tok_s"])
        record(f"vllm_group4_vs_softprompt_group4{s}",
               results[f"vllm_group4{s}_tok_s"] / results[f"softprompt_group4{s}_tok_s"])
    for s in map(suffix, results["dtypes"]):
        results[f"ratio_vs_peft{s}"] = results[f"softprompt{s}_tok_s"] / results[f"peft{s}_tok_s"]
        results[f"ratio_vs_plain{s}"] = results[f"softprompt{s}_tok_s"] / results[f"plain{s}_tok_s"]
        results[f"group4_ratio_vs_peft{s}"] = results[f"softprompt_group4{s}_tok_s"] / results[f"peft_group4{s}_tok_s"]
    for s in map(suffix, results["dtypes"][1:]):  # a low-precision run against the fp32 one, per system
        for system in ("plain", "peft", "softprompt", "peft_group4", "softprompt_group4"):
            results[f"{system}{s}_vs_fp32"] = results[f"{system}{s}_tok_s"] / results[f"{system}_tok_s"]

    table = Table(title=f"generation, {args.model}, {rows} prompts x {n_new} new tokens")
    table.add_column("system")
    table.add_column("tokens/s", justify="right")
    for s in map(suffix, results["dtypes"]):
        for system in ("plain", "peft", "softprompt", "peft_group4", "softprompt_group4", "vllm", "vllm_group4"):
            if f"{system}{s}_tok_s" in results:
                table.add_row(f"{system}{s}", f"{results[f'{system}{s}_tok_s']:.1f}")
    for key, value in results.items():
        if "ratio" in key or key.endswith("_vs_fp32"):
            table.add_row(key, f"{value:.2f}x")
        elif key.startswith(("cache_equal", "vllm_greedy_equal")):
            table.add_row(key, str(value))
    Console().print(table)
    write_results({**results, "complete": True}, args.out)


def measure(args, dtype: str, record) -> None:
    """tokens/s of the plain model, PEFT prompt tuning and softprompt, the backbone in ``dtype``, each
    passed to ``record(key, value)`` as soon as it is measured."""
    from peft import PromptTuningConfig as PeftPromptTuningConfig
    from peft import get_peft_model

    from softprompt import PromptTuningConfig, SoftPromptModel, load_backbone

    torch.manual_seed(0)
    backbone = load_backbone(args.model, dtype=dtype)
    tok, base = backbone.tokenizer, backbone.model
    n_new, g, rows, s = args.new_tokens, args.group, len(PROMPTS), suffix(dtype)
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

    record(f"plain{s}_tok_s", rows * n_new / best_time(lambda: hf_generate(base, enc), args.repeats))
    peft_model = get_peft_model(base, PeftPromptTuningConfig(task_type="CAUSAL_LM",
                                                             num_virtual_tokens=args.virtual_tokens)).eval()
    record(f"peft{s}_tok_s", rows * n_new / best_time(lambda: hf_generate(peft_model, enc), args.repeats))
    record(f"peft_group4{s}_tok_s", rows * g * n_new / best_time(lambda: hf_generate(peft_model, enc_rep),
                                                                 args.repeats))
    peft_model.unload() if hasattr(peft_model, "unload") else None
    record(f"softprompt{s}_tok_s", rows * n_new / best_time(lambda: ours_generate(1), args.repeats))
    record(f"softprompt_group4{s}_tok_s", rows * g * n_new / best_time(lambda: ours_generate(g), args.repeats))

    # correctness in the same run: greedy with the KV cache equals greedy recomputing everything
    # (exactly in fp32; in bf16 the two paths round differently, so a tie can flip a token)
    greedy = ours.generate(PROMPTS, max_new_tokens=16, do_sample=False, eos_token_ids=[])
    ids, mask = enc["input_ids"], enc["attention_mask"]
    with torch.no_grad():
        for _ in range(16):
            nxt = ours(ids, mask, logits_to_keep=1).logits[:, -1].argmax(-1, keepdim=True)
            ids, mask = torch.cat([ids, nxt], 1), torch.cat([mask, torch.ones_like(nxt)], 1)
    record(f"cache_equal{s}", bool(torch.equal(greedy.completion_ids, ids[:, -16:])))


def measure_vllm(args) -> dict:
    """In the vLLM environment: tokens/s of softprompt's vLLM backend with the same prompts, soft
    prompt and sampling as :func:`measure`, and whether its greedy tokens equal native greedy's."""
    from softprompt import PromptTuningConfig, SoftPromptModel, load_backbone
    from softprompt.modeling.generation import GenerationConfig
    from softprompt.modeling.vllm_engine import VLLMEngine

    torch.manual_seed(0)
    backbone = load_backbone(args.model, dtype=args.dtype)
    ours = SoftPromptModel.from_backbone(backbone, PromptTuningConfig(num_virtual_tokens=args.virtual_tokens,
                                                                      init="vocab", init_seed=0))
    start = time.perf_counter()
    engine = VLLMEngine(ours, seed=0, kv_cache_gb=1.0)
    started = time.perf_counter() - start
    n_new, g, rows = args.new_tokens, args.group, len(PROMPTS)

    def served(group: int):
        out = engine.generate(PROMPTS, GenerationConfig(max_new_tokens=n_new, do_sample=True, temperature=1.0,
                                                        group_size=group, eos_token_ids=[]))
        assert out.num_tokens == rows * group * n_new
        return out

    greedy = GenerationConfig(max_new_tokens=16, do_sample=False, eos_token_ids=[])
    result = {"vllm_engine_start_s": started,
              "vllm_tok_s": rows * n_new / best_time(lambda: served(1), args.repeats),
              "vllm_group4_tok_s": rows * g * n_new / best_time(lambda: served(g), args.repeats),
              "vllm_greedy_equal": bool(torch.equal(engine.generate(PROMPTS, greedy).completion_ids,
                                                    ours.generate(PROMPTS, greedy).completion_ids))}
    engine.close()
    return result


if __name__ == "__main__":
    main()
