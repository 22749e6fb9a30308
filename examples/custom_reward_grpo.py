"""A custom reward function with GRPO, through the library API (no CLI).

Steers SmolLM2-135M-Instruct (offline, packaged) with a 20-token soft prompt to continue
movie-review openings with vivid words, while a length term keeps answers from running on.
A few steps show the mechanics; raise ``train.max_steps`` for a real run.

    python examples/custom_reward_grpo.py [train.max_steps=8 ...]
"""

import sys

import softprompt

VIVID = {"stunning", "breathtaking", "gorgeous", "haunting", "dazzling", "vibrant", "electric", "luminous",
         "gripping", "tender", "bold", "lush", "radiant", "fierce", "delightful", "brilliant", "moving"}


def vivid_words(prompts, completions, examples):
    """Share of the completion's words that are vivid adjectives: a list with one float per completion."""
    out = []
    for text in completions:
        words = [w.strip(".,!?;:\"'").lower() for w in text.split()]
        out.append(sum(w in VIVID for w in words) / max(len(words), 1))
    return out


def not_too_long(prompts, completions, examples):
    return [-len(text.split()) / 100 for text in completions]


if __name__ == "__main__":
    result = softprompt.train(
        "sentiment_steering",
        ["run_id=custom-reward", "train.max_steps=4", "prompts.num_eval=8", "generation.max_new_tokens=16",
         "method.beta=0.0", *sys.argv[1:]],
        rewards=[("vivid", 1.0, vivid_words), ("length", 0.5, not_too_long)],
    )
    m = result.metrics
    print(f"reward before {m['before_eval_reward']:.4f} -> after {m['eval_reward']:.4f} "
          f"(vivid {m['eval_reward/vivid']:.4f}); run folder: {result.run_dir}")
