"""Diversity and Pass@k metrics over 10,000 generations of 32 words (100 prompts x 100 samples).

    python bench/diversity.py [--prompts 100] [--samples 100] [--words 32]

The texts are synthetic (a word-level bigram walk over SST-2 dev sentences, or over the
built-in review openings without the GLUE folder): the metrics' cost depends on the number and
length of the texts, not on where they came from, and 10,000 SmolLM2 samples would take an
hour to generate here. Every metric runs on all 10,000 texts: nothing is sampled.

Embedding diversity is the slow metric here (MiniLM runs at about 9 ms a text on 2 cores, 90 s
for all 10,000): by default it embeds a seeded sample of 20 of each prompt's 100 samples, an
unbiased estimate of the mean pairwise distance (``--embed-per-set 0`` embeds all;
``--all-embeddings-too`` times both). Self-BLEU is exact and computed in one pass per prompt (each sample's n-grams counted once,
the multi-reference clip read from each n-gram's two largest counts); the peer is sacrebleu's
``sentence_bleu(sample, other_samples)`` per sample, timed on ``--peer-prompts`` prompts and
scaled to all of them, and the two are checked to agree there. Writes bench/results/diversity.json.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results  # noqa: E402


def corpus_sentences(data_dir: str) -> list[str]:
    path = Path(data_dir) / "SST-2" / "dev.tsv"
    if path.exists():
        return [line.split("\t")[0] for line in path.read_text().splitlines()[1:] if line.strip()]
    from importlib import resources

    return resources.files("softprompt").joinpath("data/review_openings.txt").read_text().splitlines()


def synthetic_generations(sentences: list[str], prompts: int, samples: int, words: int, seed: int = 0):
    """``prompts`` groups of ``samples`` texts of ``words`` words, from a bigram walk per prompt."""
    follow: dict[str, list[str]] = {}
    for s in sentences:
        w = s.lower().split()
        for a, b in zip(w, w[1:]):
            follow.setdefault(a, []).append(b)
    starts = [w for w in follow if len(follow[w]) > 2]
    rng = random.Random(seed)
    groups = []
    for _ in range(prompts):
        first = rng.choice(starts)  # a prompt's samples share their first word, as continuations do
        group = []
        for _ in range(samples):
            out, w = [first], first
            while len(out) < words:
                w = rng.choice(follow.get(w) or starts)
                out.append(w)
            group.append(" ".join(out))
        groups.append(group)
    return groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--words", type=int, default=32)
    ap.add_argument("--peer-prompts", type=int, default=5, help="prompts on which sacrebleu's own loop is timed")
    ap.add_argument("--embed-per-set", type=int, default=20,
                    help="embed a seeded sample of this many of each prompt's samples (0: all of them)")
    ap.add_argument("--all-embeddings-too", action="store_true",
                    help="also time embedding every text (about 90 s here), for the record")
    ap.add_argument("--data-dir", default="../shared/data/glue")
    ap.add_argument("--out", default="bench/results/diversity.json")
    args = ap.parse_args()

    import sacrebleu
    import torch

    from softprompt.metrics.diversity import (
        distinct_n,
        encode_groups,
        pass_at_k,
        self_bleu,
        sentence_encoder,
        set_metrics,
    )

    groups = synthetic_generations(corpus_sentences(args.data_dir), args.prompts, args.samples, args.words)
    flat = [t for g in groups for t in g]
    n = len(flat)
    print(f"{n} texts ({args.prompts} prompts x {args.samples} samples, {args.words} words)")

    sentence_encoder("minilm-l6")  # loading the model is not part of the metric
    timings: dict[str, float] = {}
    start = time.perf_counter()
    t = time.perf_counter()
    embeddings = encode_groups(groups, max_per_set=args.embed_per_set or None)
    timings["embedding_encode"] = time.perf_counter() - t
    metrics = set_metrics(groups, embeddings, timings)
    t = time.perf_counter()
    metrics["distinct_2_all"] = distinct_n(flat, 2)
    timings["distinct_2_all"] = time.perf_counter() - t
    t = time.perf_counter()
    correct = [sum("good" in s for s in g) for g in groups]  # a regex-style verifier
    metrics.update({f"pass@{k}": sum(pass_at_k(args.samples, c, k) for c in correct) / len(correct)
                    for k in (1, 10, 100) if k <= args.samples})
    timings["pass_at_k"] = time.perf_counter() - t
    total = time.perf_counter() - start

    full = None
    if args.all_embeddings_too and args.embed_per_set:
        from softprompt.metrics.diversity import embedding_diversity

        t = time.perf_counter()
        everything = encode_groups(groups)
        full = {"encode_s": round(time.perf_counter() - t, 2),
                "embedding_diversity": sum(embedding_diversity(e) for e in everything) / len(everything)}

    peer = groups[:args.peer_prompts]
    t = time.perf_counter()
    peer_scores = [sum(sacrebleu.sentence_bleu(s, g[:i] + g[i + 1:]).score for i, s in enumerate(g)) / len(g)
                   for g in peer]
    peer_s = (time.perf_counter() - t) * args.prompts / len(peer)
    ours = [self_bleu(g) for g in peer]
    agree = max(abs(a - b) for a, b in zip(ours, peer_scores))
    results = {
        "n_generations": n, "prompts": args.prompts, "samples_per_prompt": args.samples, "words": args.words,
        "total_s": round(total, 3), "seconds_per_metric": {k: round(v, 3) for k, v in timings.items()},
        "self_bleu_method": "exact, one pass per prompt (no sampling, no parallelism)",
        "embedding_method": (f"a seeded sample of {args.embed_per_set} of each prompt's {args.samples} samples "
                             "embedded (unbiased estimate of the mean pairwise distance)" if args.embed_per_set
                             else "every text embedded"),
        "all_embeddings": full,
        "sacrebleu_loop_self_bleu_s": round(peer_s, 2),
        "self_bleu_speedup_vs_sacrebleu_loop": round(peer_s / timings["self_bleu"], 1),
        "self_bleu_max_abs_difference": agree,
        "torch_threads": torch.get_num_threads(),
        "metrics": {k: round(v, 4) for k, v in metrics.items()},
    }
    for k, v in results["seconds_per_metric"].items():
        print(f"  {k:22s} {v:8.3f} s")
    print(f"total {total:.2f} s (target < 30 s); sacrebleu's own loop would take {peer_s:.0f} s for Self-BLEU "
          f"({results['self_bleu_speedup_vs_sacrebleu_loop']}x), max difference {agree:.2e}")
    write_results(results, args.out)


if __name__ == "__main__":
    main()
