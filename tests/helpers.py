"""Reference implementations the tests compare against."""

from __future__ import annotations

import torch


@torch.no_grad()
def greedy_without_cache(model, prompt_ids, prompt_mask, steps: int, condition=None) -> torch.Tensor:
    """Greedy decoding that re-runs the whole sequence every step (no KV cache)."""
    ids, mask = prompt_ids, prompt_mask
    new = []
    for _ in range(steps):
        logits = model(ids, mask, condition=condition, logits_to_keep=1).logits[:, -1]
        token = logits.argmax(-1)
        new.append(token)
        ids = torch.cat([ids, token[:, None]], 1)
        mask = torch.cat([mask, torch.ones_like(token[:, None])], 1)
    return torch.stack(new, 1)


def encode(tok, texts):
    enc = tok(texts, return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]


def fit_until_killed(trainer, epoch: int) -> None:
    """Run ``trainer`` and stop it like a crash right after it saved ``checkpoints/last`` at ``epoch``."""
    import pytest

    original = trainer._save

    def save_then_die(which):
        original(which)
        if which == "last" and trainer.counters["epoch"] == epoch:
            raise KeyboardInterrupt
    trainer._save = save_then_die
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(progress=False)


FP32_UNIT_ROUNDOFF = 2.0 ** -24


def fp32_path_tolerance(reference: torch.Tensor, depth: int, width: int, margin: float = 4.0) -> float:
    """How far two fp32 computations of the same function may differ when they only order the
    arithmetic differently (another kernel, another instruction set, cached vs in-sequence K/V).

    A dot product of ``width`` terms summed in another order differs by about sqrt(width) unit
    roundoffs of its scale (the rounding errors are independent and add like a random walk);
    ``depth`` residual blocks add one such error each, and layer norms and the softmax pass them
    on without amplifying them much (``margin`` covers that). So the bound is
    margin * depth * sqrt(width) * 2**-24 times the output's scale: for SmolLM2 (30 blocks, MLP
    width 1536) about 3e-4 of the largest logit. A real placement error is of order 1 (PEFT's
    left padding moves logits by 2.4), three orders of magnitude above it.
    """
    scale = float(reference.detach().abs().max())
    return margin * depth * width ** 0.5 * FP32_UNIT_ROUNDOFF * scale


def assert_same_function(actual: torch.Tensor, expected: torch.Tensor, depth: int, width: int,
                         scale: float | None = None) -> None:
    """``actual`` equals ``expected`` up to :func:`fp32_path_tolerance` of ``expected``'s largest
    magnitude, or of ``scale`` when given (log-probs: see :func:`logprob_scale`)."""
    tol = fp32_path_tolerance(expected if scale is None else torch.tensor(scale), depth, width)
    diff = float((actual.detach().float() - expected.detach().float()).abs().max())
    assert diff <= tol, f"max difference {diff:.3g} exceeds the fp32 reordering bound {tol:.3g}"


def depth_and_width(model) -> tuple[int, int]:
    """(blocks, widest matmul) of a SoftPromptModel, a Backbone or a transformers model."""
    inner = getattr(model, "model", model)  # SoftPromptModel / Backbone -> the transformers model
    config = inner.config.get_text_config() if hasattr(inner.config, "get_text_config") else inner.config
    width = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * config.hidden_size
    return config.num_hidden_layers, max(width, config.hidden_size)


def assert_paths_agree(actual: torch.Tensor, expected: torch.Tensor, model, scale: float | None = None) -> None:
    """Two fp32 computations of the same function through ``model`` (another batch layout, a cached
    or packed path, another library) agree within :func:`fp32_path_tolerance` (see
    :func:`assert_same_function` for ``scale``)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert_same_function(actual, expected, *depth_and_width(model), scale=scale)


def logprob_scale(model, ids, mask, temperature: float = 1.0) -> float:
    """The scale a log-prob's path error is relative to: log p = z/T - logsumexp(z/T) carries the
    logits' error twice (the token's logit and the normaliser, each of the logits' scale / T), so
    2 * the largest |logit| / T. The log-prob's own magnitude is not that scale: it is small where
    the logits are large and confident."""
    return 2 * logit_scale(model, ids, mask) / temperature


BF16_ULP = 2.0 ** -8  # bf16 keeps 8 significant bits: unit roundoff 2^-9, one ulp 2^-8 of a value


def bf16_path_tolerance(scale: float, depth: int, margin: float = 4.0) -> float:
    """How far two bf16 computations of the same function may differ (cached vs in-sequence K/V,
    a teacher-forced pass vs the sampling steps), for an output of magnitude ``scale`` (the
    largest logit).

    The matmuls accumulate in fp32; what bf16 loses is the rounding of every stored activation to
    8 significant bits. Two paths that order the fp32 sums differently land on neighbouring bf16
    values: about one ulp, 2^-8 of the activation's scale, where fp32 reordering costs 2^-24
    (see :func:`fp32_path_tolerance`). Those roundings are independent from block to block, so
    over ``depth`` residual blocks they add like a random walk, sqrt(depth) ulps; the norms and
    the softmax pass relative errors on without amplifying them much, and ``margin`` covers the
    several roundings inside a block and the log-softmax (a log-prob moves by at most twice its
    logits' error). So margin * sqrt(depth) * 2^-8 * scale: 0.2 for the tiny 2-block Llama's logits
    (about 9), where the paths measure 0.03. A placement error is of order 1 (PEFT's left padding
    moves logits by 2.4) and still fails.
    """
    return margin * depth ** 0.5 * BF16_ULP * scale


def logit_scale(model, ids, mask, condition=None) -> float:
    """The largest |logit| of a SoftPromptModel on a batch: the scale of :func:`bf16_path_tolerance`."""
    with torch.no_grad():
        return float(model(ids, mask, condition=condition).logits.float().abs().max())


def poisoned_grad(loss: torch.Tensor, value: float) -> torch.Tensor:
    """A term whose value is 0 but whose gradient is ``value`` (NaN or inf) times the incoming one:
    added to a loss, it leaves the loss as it is and poisons the backward pass."""
    class Poison(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 0

        @staticmethod
        def backward(ctx, g):
            return g * value

    return Poison.apply(loss)
