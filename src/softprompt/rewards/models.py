"""Rewards that run a model: a classifier's class probability, embedding cosine, perplexity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..config.fields import hfield
from ..errors import ConfigError
from ..modeling.backbones import check_model_spec, load_backbone, resolve
from ..modeling.embeddings import sentence_encoder
from ..modeling.model import SoftPromptModel, resolve_run_path
from ..modeling.precision import resolve_dtype
from ..modeling.scoring import completion_perplexity
from ..runs import RunFolder
from ..runs.loading import load_reward_model, load_trained_classifier
from ..tasks.data import Example, example_field
from .base import REWARDS, Reward


@dataclass
class ClassifierRewardConfig:
    run: str | None = hfield(None, "a softprompt classifier run folder or adapter directory")
    model: str | None = hfield(None, "a sequence-classification model (hub id or directory); or, with "
                                     "'task', the backbone of a verbalizer classifier with no adapter")
    task: str | None = hfield(None, "the task whose template and label words score the text (default: the run's)")
    target: int | str = hfield(1, "the class whose probability is the reward (index or label name)", ge=0)
    target_field: str | None = hfield(None, "else each example's own target class, from this field (a label name "
                                            "or index), e.g. 'condition' for a conditional prompt")
    include_prompt: bool = hfield(True, "score prompt + completion (else the completion alone)")
    batch_size: int = hfield(32, "texts per forward pass", ge=1)
    max_length: int = hfield(256, "truncate texts to this many tokens", ge=1)

    def __post_init__(self):
        if (self.run is None) == (self.model is None and self.task is None):
            raise ConfigError("classifier reward: give 'run' (a softprompt classifier), or 'model' "
                              "(a sequence-classification model, or a backbone with 'task')")


@REWARDS.register("classifier")
class ClassifierReward(Reward):
    """p(target | text) from a softprompt classifier run, a verbalizer, or any HF sequence classifier."""

    config_class = ClassifierRewardConfig
    nonnegative = True  # a probability

    def __init__(self, config, context):
        super().__init__(config, context)
        c = config
        if c.run is not None or c.task is not None:
            self.clf, self.task, _ = load_trained_classifier(c.run, c.task, model=c.model, **context.load_kw)
            self.clf.eval()
            names = self.task.label_names
            self.hf = None
        else:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            check_model_spec(c.model)
            path = resolve(c.model)[0]
            self.tok = AutoTokenizer.from_pretrained(path)
            dtype = resolve_dtype(context.dtype, context.device)
            self.hf = AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True, dtype=dtype)
            self.hf.to(context.device).eval()
            names = [self.hf.config.id2label[i] for i in range(self.hf.config.num_labels)]
        self.names = names
        self.target = _class_index(c.target, names)

    @torch.no_grad()
    def __call__(self, prompts, completions, examples):
        targets = [self.target] * len(completions) if self.config.target_field is None else [
            _class_index(_field(e, self.config.target_field), self.names) for e in examples]
        texts = [p + c for p, c in zip(prompts, completions)] if self.config.include_prompt else list(completions)
        out = []
        for b in range(0, len(texts), self.config.batch_size):
            chunk = texts[b:b + self.config.batch_size]
            if self.hf is None:
                batch = self.clf.tokenize([self.task.format(Example(text=t, label=None)) for t in chunk],
                                          self.config.max_length)
                probs = self.clf.scores(batch).float().softmax(-1).cpu()
            else:
                enc = self.tok(chunk, return_tensors="pt", padding=True, truncation=True,
                               max_length=self.config.max_length).to(self.hf.device)
                probs = self.hf(**enc).logits.float().softmax(-1).cpu()
            picked = torch.tensor(targets[b:b + self.config.batch_size])
            out.extend(probs.gather(1, picked[:, None]).squeeze(1).tolist())
        return out


def _class_index(target: int | str, names: list[str]) -> int:
    if isinstance(target, str) and target.isdigit():
        target = int(target)
    if isinstance(target, int) and 0 <= target < max(len(names), 2):
        return target
    if isinstance(target, str) and target in names:
        return names.index(target)
    raise ConfigError(f"classifier reward target={target!r}: expected a class index or one of {names}")


@dataclass
class RewardModelConfig:
    run: str | None = hfield(None, "a softprompt reward-model run (reward_pairwise: its scalar score) or a "
                                   "classifier run (pointwise: the probability of 'target')")
    input: Literal["pair", "text", "completion"] = hfield(
        "pair", "pair: context = the prompt, response = the completion; text: no context, "
                "response = prompt + completion (for reward models trained on whole texts); completion: "
                "no context, the completion alone (when the prompt is a request, not part of the text)")
    target: int | str = hfield(1, "pointwise (classifier run): the class whose probability is the reward", ge=0)
    sign_field: str | None = hfield(None, "multiply each score by signs[the example's value of this field], e.g. "
                                          "'condition' with signs {positive: 1, negative: -1}")
    signs: dict[str, float] = hfield({"positive": 1.0, "negative": -1.0}, "sign_field: a factor per value")
    batch_size: int = hfield(32, "texts per forward pass", ge=1)

    def __post_init__(self):
        if not self.run:
            raise ConfigError("reward_model reward: give 'run', a reward-model or classifier run folder")


@REWARDS.register("reward_model")
class RewardModelReward(Reward):
    """A trained reward model's score: comparative (scalar head) or pointwise (class probability)."""

    config_class = RewardModelConfig

    def __init__(self, config, context):
        super().__init__(config, context)

        path = resolve_run_path(config.run)
        run = RunFolder(path)
        saved = run.read_config() if run.has_config else None
        kind = saved.method_config().kind if saved is not None else None
        if kind not in (None, "classification", "preference"):
            raise ConfigError(f"reward_model reward: {path} is a {saved.method_name!r} run, not a reward model "
                              "(reward_pairwise) nor a classifier (pointwise)")
        self.pointwise = None
        if kind == "classification":
            self.pointwise = ClassifierReward(ClassifierRewardConfig(run=config.run, target=config.target,
                                                                     batch_size=config.batch_size), context)
        else:
            self.rm = load_reward_model(config.run, config=saved, **context.load_kw)

    @property
    def nonnegative(self) -> bool:  # a classifier's probability, unless a sign can flip it
        signs = self.config.signs.values() if self.config.sign_field is not None else ()
        return self.pointwise is not None and all(s >= 0 for s in signs)

    def __call__(self, prompts, completions, examples):
        scores = torch.as_tensor(self._scores(prompts, completions, examples), dtype=torch.float)
        if self.config.sign_field is None:
            return scores
        signs = []
        for e in examples:
            value = str(_field(e, self.config.sign_field))
            if value not in self.config.signs:
                raise ConfigError(f"reward_model: {self.config.sign_field}={value!r} has no entry in signs "
                                  f"{self.config.signs}")
            signs.append(float(self.config.signs[value]))
        return scores * torch.tensor(signs)

    def _scores(self, prompts, completions, examples):
        if self.pointwise is not None:
            return self.pointwise(prompts, completions, examples)
        if self.config.input == "text":
            contexts, responses = [""] * len(prompts), [p + c for p, c in zip(prompts, completions)]
        elif self.config.input == "completion":
            contexts, responses = [""] * len(prompts), list(completions)
        else:
            contexts, responses = list(prompts), list(completions)
        return self.rm.score(contexts, responses, self.config.batch_size)


@dataclass
class EmbeddingCosineConfig:
    model: str = hfield("minilm-l6", "sentence-transformers model: alias, directory or hub id")
    target_text: str | None = hfield(None, "a fixed text to be close to")
    target_field: str | None = hfield("reference", "else the example's field holding its own target text")
    scale_field: str | None = hfield(None, "multiply each row's cosine by this field of its example (RLPT)")

    def __post_init__(self):
        if self.target_text is None and self.target_field is None:
            raise ConfigError("embedding_cosine: give target_text or target_field")


@REWARDS.register("embedding_cosine")
class EmbeddingCosine(Reward):
    """cos(embed(completion), embed(target)); the target is fixed or each example's own (RLPT)."""

    config_class = EmbeddingCosineConfig

    def __init__(self, config, context):
        super().__init__(config, context)

        self.encoder = sentence_encoder(config.model, str(context.device))

    @torch.no_grad()
    def __call__(self, prompts, completions, examples):
        c = self.config
        targets = [c.target_text] * len(completions) if c.target_text is not None else [
            _field(e, c.target_field) for e in examples]
        a = self.encoder.encode(list(completions), convert_to_tensor=True, normalize_embeddings=True)
        b = self.encoder.encode(targets, convert_to_tensor=True, normalize_embeddings=True)
        cos = (a * b).sum(-1).float().cpu()
        if c.scale_field:
            cos = cos * torch.tensor([float(_field(e, c.scale_field)) for e in examples])
        return cos


def _field(example, name: str):
    value = example_field(example, name)
    if value is None:
        raise ConfigError(f"reward needs field {name!r} on every prompt example; {example!r} has none")
    return value


@dataclass
class PerplexityConfig:
    model: str | None = hfield(None, "causal LM scoring the text (default: the policy's backbone as loaded, no "
                                     "prompt, LoRA off, unfrozen blocks at their loaded weights)")
    zscore: bool = hfield(True, "z-score over the batch (RLPT); else the raw negative perplexity")
    max_perplexity: float = hfield(1000.0, "clip perplexity here before z-scoring", gt=1)


@REWARDS.register("perplexity")
class Perplexity(Reward):
    """-perplexity of the completion given the prompt under a frozen LM, z-scored over the batch."""

    config_class = PerplexityConfig

    def __init__(self, config, context):
        super().__init__(config, context)

        backbone = load_backbone(config.model, **context.load_kw) if config.model else context.backbone
        if backbone is None or not backbone.is_causal:
            raise ConfigError("perplexity reward: needs a causal LM (set model, or use a causal policy)")
        self.lm = SoftPromptModel(backbone)  # scored under lm.untouched(): LoRA off, unfrozen blocks as loaded
        self._shared: dict = {}

    def share_base_logprobs(self, prompts, completions, nll: torch.Tensor, count: torch.Tensor) -> None:
        """Take the completions' summed NLL (N,) and token counts (N,) under the untouched
        backbone from a pass that already ran (the rollout's no-prompt reference), so this
        reward costs no forward pass of its own. Ignored when the reward scores with another model."""
        if self.config.model is None:
            self._shared = {(p, c): (float(n), float(k)) for p, c, n, k in zip(prompts, completions, nll, count)}

    def __call__(self, prompts, completions, examples):
        shared, self._shared = self._shared, {}
        keys = list(zip(prompts, completions))
        if shared and all(k in shared for k in keys):
            nll, count = (torch.tensor([shared[k][i] for k in keys]) for i in (0, 1))
            ppl = torch.exp(nll / count.clamp(min=1))
        else:
            with self.lm.untouched():
                ppl = completion_perplexity(self.lm, prompts, completions)
        ppl = ppl.clamp(max=self.config.max_perplexity)
        score = -ppl
        if self.config.zscore and len(score) > 1:
            score = (score - score.mean()) / (score.std() + 1e-6)
        return score
