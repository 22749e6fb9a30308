"""Classifiers built on a SoftPromptModel.

- ``VerbalizerClassifier`` (causal LM): the score of class c is the log-sum-exp of the
  next-token logits of its label words at the last position. Only the label words' rows
  of the LM head are multiplied, at that one position.
- ``EmbeddingClassifier`` (encoder, or a decoder embedding model): pooled representation
  (mean, CLS or last token, as the model card says) then a linear head trained with the
  prompt.

Both take a tokenized, left-padded batch and return class scores (B, C); regression tasks
(STS-B) read the expected value: over the label words' values (verbalizer) or the head's
single output (embedding).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..storage import load_tensors, save_tensors

log = logging.getLogger(__name__)


class Classifier(nn.Module):
    kind = ""

    def __init__(self, model, num_labels: int, regression: bool = False):
        super().__init__()
        self.model = model
        self.num_labels = num_labels
        self.regression = regression

    @property
    def tokenizer(self):
        return self.model.tokenizer

    def tokenize(self, texts: list[str], max_length: int | None = None) -> dict:
        tok = self.tokenizer
        side, tok.padding_side = tok.padding_side, "left"
        tside, tok.truncation_side = tok.truncation_side, "left"  # keep the end: the template's question
        try:
            enc = tok(texts, padding=True, truncation=max_length is not None, max_length=max_length,
                      return_tensors="pt")
        finally:
            tok.padding_side, tok.truncation_side = side, tside
        device = self.model.device
        return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}

    def trainable_parameters(self) -> list[nn.Parameter]:
        return self.model.trainable_parameters() + [p for p in self.head_parameters() if p.requires_grad]

    def head_parameters(self) -> list[nn.Parameter]:
        return []

    def features(self, batch: dict, prompt: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def scores_from_features(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def scores(self, batch: dict, prompt: torch.Tensor | None = None) -> torch.Tensor:
        return self.scores_from_features(self.features(batch, prompt))

    def predict(self, scores: torch.Tensor) -> torch.Tensor:
        """Class index per row, or the predicted value for regression."""
        return scores.argmax(-1)

    def prompt(self, batch: dict) -> torch.Tensor:
        """The adapter's virtual tokens for this batch (B, n, H), for objectives that mutate them."""
        adapter = self.model.adapter
        if adapter is None or not adapter.num_sequence_tokens:
            raise ConfigError("this objective needs a prompt_tuning or conditional_prompt adapter")
        return adapter.prompt_embeddings(len(batch["input_ids"]), batch.get("condition"))

    # head weights live beside the adapter
    def head_state(self) -> dict[str, torch.Tensor]:
        return {}

    def load_head_state(self, tensors: dict[str, torch.Tensor]) -> None:
        pass


class VerbalizerClassifier(Classifier):
    kind = "verbalizer"

    def __init__(self, model, label_words: list[list[str]], values: list[float] | None = None,
                 word_prefix: str = " "):
        regression = values is not None
        super().__init__(model, len(label_words), regression)
        if not model.backbone.is_causal:
            raise ConfigError(f"a verbalizer needs a causal LM, {model.backbone.spec!r} is an encoder")
        ids, owner = [], []
        for c, words in enumerate(label_words):
            if not words:
                raise ConfigError(f"class {c} has no label words")
            seen = set()
            for word in words:
                pieces = self.tokenizer(word_prefix + word, add_special_tokens=False)["input_ids"]
                if len(pieces) > 1 and not self.tokenizer.decode(pieces[:1]).strip():
                    # the tokenizer keeps the space apart (SmolLM2 does for digits: " 3" = " ", "3"):
                    # score the word itself, which is what a trained prompt can put there
                    pieces = self.tokenizer(word, add_special_tokens=False)["input_ids"]
                if len(pieces) > 1:
                    log.warning("label word %r is %d tokens; scoring its first token", word, len(pieces))
                if pieces and pieces[0] not in seen:
                    seen.add(pieces[0])
                    ids.append(pieces[0])
                    owner.append(c)
        taken = {}
        for i, c in zip(ids, owner):
            if taken.setdefault(i, c) != c:
                raise ConfigError(f"label token {self.tokenizer.decode([i])!r} belongs to classes {taken[i]} and {c}")
        self.register_buffer("label_ids", torch.tensor(ids), persistent=False)
        self.register_buffer("label_owner", torch.tensor(owner), persistent=False)
        self.register_buffer("values", torch.tensor(values if values is not None else [], dtype=torch.float),
                             persistent=False)
        self.label_words = label_words

    def features(self, batch: dict, prompt: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.last_hidden(batch["input_ids"], batch["attention_mask"], batch.get("condition"), prompt)

    def scores_from_features(self, features: torch.Tensor) -> torch.Tensor:
        head = self.model.model.get_output_embeddings()
        weight = head.weight[self.label_ids]
        bias = head.bias[self.label_ids] if getattr(head, "bias", None) is not None else None
        logits = F.linear(features.to(weight.dtype), weight, bias).float()  # (B, K)
        cap = getattr(self.model.model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        # log-sum-exp within each class: mask the other classes' words with -inf
        same = self.label_owner.unsqueeze(0) == torch.arange(self.num_labels, device=logits.device).unsqueeze(1)
        return torch.where(same.unsqueeze(0), logits.unsqueeze(1), float("-inf")).logsumexp(-1)  # (B, C)

    def predict(self, scores: torch.Tensor) -> torch.Tensor:
        if self.regression:
            return scores.softmax(-1) @ self.values.to(scores.device)
        return scores.argmax(-1)


class EmbeddingClassifier(Classifier):
    kind = "embedding"

    def __init__(self, model, num_labels: int, pooling: str | None = None, regression: bool = False):
        super().__init__(model, num_labels, regression)
        pooling = pooling or model.backbone.pooling or ("last" if model.backbone.is_causal else "mean")
        if pooling not in ("mean", "cls", "last"):
            raise ConfigError(f"pooling={pooling!r}: expected 'mean', 'cls' or 'last'")
        self.pooling = pooling
        out = 1 if regression else num_labels
        self.head = nn.Linear(model.backbone.hidden_size, out).to(model.device)

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def features(self, batch: dict, prompt: torch.Tensor | None = None) -> torch.Tensor:
        hidden, real = self.model.encode(batch["input_ids"], batch["attention_mask"], batch.get("condition"), prompt)
        hidden = hidden.float()  # pooled and fed to the fp32 head in fp32, whatever the backbone's dtype
        real = real.to(hidden.dtype)
        if self.pooling == "mean":
            return (hidden * real.unsqueeze(-1)).sum(1) / real.sum(1, keepdim=True).clamp(min=1)
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        if self.pooling == "cls":  # first real token
            index = torch.where(real.bool(), positions, hidden.shape[1]).min(1).values
        else:  # last real token
            index = torch.where(real.bool(), positions, -1).max(1).values
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]

    def scores_from_features(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features.to(self.head.weight.dtype)).float()

    def predict(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.squeeze(-1) if self.regression else scores.argmax(-1)

    def head_state(self) -> dict[str, torch.Tensor]:
        return {f"head.{k}": v.detach() for k, v in self.head.state_dict().items()}

    def load_head_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.head.load_state_dict({k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")})


def save_head(classifier: Classifier, directory: str | Path) -> None:
    state = classifier.head_state()
    if state:
        save_tensors(Path(directory) / "head.safetensors", state)


def load_head(classifier: Classifier, directory: str | Path) -> None:
    path = Path(directory) / "head.safetensors"
    if classifier.head_state():
        classifier.load_head_state(load_tensors(path))
