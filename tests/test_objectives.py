"""Objectives against hand-computed values; every term moves the prompt; phases switch on time."""

import math

import pytest
import torch
from conftest import tiny_bert, tiny_llama

from softprompt import PromptTuningConfig, SoftPromptModel
from softprompt.errors import ConfigError
from softprompt.modeling.classifiers import EmbeddingClassifier, VerbalizerClassifier
from softprompt.objectives import OBJECTIVES, Phase, Schedule, StepInputs
from softprompt.objectives.contrastive import ContrastiveConfig, info_nce, mutate
from softprompt.objectives.label_reinforce import LabelReinforceConfig
from softprompt.objectives.mle import MLEConfig, two_hot

TEXTS = ["the movie was great", "i loved it", "a boring plot", "awful actors and a bad story",
         "really fun", "i hated it", "so good", "not very good"]
LABELS = torch.tensor([1, 1, 0, 0, 1, 0, 1, 0])


class FixedScores:
    """A stand-in classifier whose scores are given."""

    regression = False

    def __init__(self, scores):
        self.s = scores

    def features(self, batch, prompt=None):
        return self.s

    def scores_from_features(self, f):
        return f


def make(kind="verbalizer"):
    if kind == "verbalizer":
        model = SoftPromptModel.from_backbone(tiny_llama(), PromptTuningConfig(num_virtual_tokens=4, init="random"))
        clf = VerbalizerClassifier(model, [["bad", "awful"], ["good", "great"]])
    else:
        model = SoftPromptModel.from_backbone(tiny_bert(), PromptTuningConfig(num_virtual_tokens=4, init="random"))
        clf = EmbeddingClassifier(model, 2, pooling="mean")
    batch = clf.tokenize(TEXTS)
    batch["labels"] = LABELS
    return clf, batch


def test_mle_equals_hand_computed_cross_entropy():
    scores = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    out = OBJECTIVES.get("mle")(MLEConfig())(StepInputs({"labels": torch.tensor([0, 0])}, FixedScores(scores)))
    p0 = math.exp(2) / (math.exp(2) + 1)
    p1 = 1 / (1 + math.e)
    assert out.loss.item() == pytest.approx(-(math.log(p0) + math.log(p1)) / 2, rel=1e-6)
    assert out.metrics["train_accuracy"] == 0.5


def test_balanced_class_weights_by_hand():
    # training labels 0,0,0,1: balanced weights n / (classes * count) = 4/6 and 4/2
    mle = OBJECTIVES.get("mle")(MLEConfig(class_weights="balanced"))
    mle.prepare([0, 0, 0, 1])
    torch.testing.assert_close(mle.weight, torch.tensor([2 / 3, 2.0]))
    scores = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    out = mle(StepInputs({"labels": torch.tensor([0, 1])}, FixedScores(scores)))
    l0 = -math.log(math.exp(2) / (math.exp(2) + 1))
    l1 = -math.log(math.e / (1 + math.e))
    # torch's weighted mean: sum(w_y * loss) / sum(w_y)
    assert out.loss.item() == pytest.approx((2 / 3 * l0 + 2 * l1) / (2 / 3 + 2), rel=1e-6)
    with pytest.raises(ConfigError, match="balanced"):
        MLEConfig(class_weights="balance")


def test_two_hot_has_the_right_expectation():
    values = torch.arange(6.0)
    target = two_hot(torch.tensor([2.3, 5.0, 0.0]), values)
    torch.testing.assert_close(target[0], torch.tensor([0, 0, 0.7, 0.3, 0, 0]))
    torch.testing.assert_close(target @ values, torch.tensor([2.3, 5.0, 0.0]))


def test_info_nce_by_hand():
    anchor = torch.tensor([[1.0, 0.0]])
    positive = torch.tensor([[1.0, 1.0]])  # cos = 1/sqrt(2)
    negatives = torch.tensor([[[0.0, 1.0], [-1.0, 0.0]]])  # cos 0 and -1
    tau = 0.5
    logits = torch.tensor([1 / math.sqrt(2), 0.0, -1.0]) / tau
    expected = -(logits[0] - logits.logsumexp(0))
    assert info_nce(anchor, positive, negatives, tau).item() == pytest.approx(expected.item(), rel=1e-6)


class PromptFeatures:
    """A stand-in classifier whose features are a function of the prompt it is given, so the whole
    contrastive objective (which views, which target, the temperature) can be computed by hand."""

    regression = False

    def __init__(self, prompt: torch.Tensor, pool):
        self.p, self.pool = prompt, pool

    def prompt(self, batch):
        return self.p.expand(len(batch["labels"]), -1, -1)

    def features(self, batch, prompt=None):
        return self.pool(self.prompt(batch) if prompt is None else prompt)


def test_whole_contrastive_objective_by_hand():
    from softprompt.objectives.contrastive import Contrastive

    batch = {"labels": torch.tensor([0, 1])}
    prompt = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]], requires_grad=True)
    # features = mean over the virtual tokens, which a shuffle keeps: the positive (no dropout) and every
    # negative equal the anchor, all K + 1 logits are 1/tau, so the loss is log(K + 1) whatever tau is
    mean = PromptFeatures(prompt, lambda p: p.mean(1))
    for k, tau in ((3, 0.1), (5, 2.0)):
        cfg = ContrastiveConfig(k_negatives=k, temperature=tau, dropout=0.0, mutations=["shuffle"])
        out = Contrastive(cfg)(StepInputs(dict(batch), mean))
        assert out.loss.item() == pytest.approx(math.log(k + 1), rel=1e-6)
        assert out.metrics["cos_positive"] == pytest.approx(1.0) and out.metrics["cos_negative"] == pytest.approx(1.0)
    # features = the first virtual token; 'drop' keeps one of three: token 0 (cos 1 with the anchor [1, 0]),
    # token 1 (cos 0) or token 2 (cos 1/sqrt 2). The positive is the anchor itself: cos 1.
    first = PromptFeatures(prompt, lambda p: p[:, 0])
    cfg = ContrastiveConfig(k_negatives=1, temperature=0.5, dropout=0.0, mutations=["drop"], drop_fraction=0.6)
    for seed in range(6):
        torch.manual_seed(seed)
        out = Contrastive(cfg)(StepInputs(dict(batch), first))
        torch.manual_seed(seed)  # the same draws: which token each row kept
        kept = torch.rand(2, 3).argsort(1)[:, 0]
        cos = torch.tensor([1.0, 0.0, 1 / math.sqrt(2)])[kept]
        expected = (-(1 / 0.5) + torch.logaddexp(torch.tensor(1 / 0.5), cos / 0.5)).mean()
        assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
        assert out.metrics["cos_negative"] == pytest.approx(cos.mean().item(), rel=1e-5)
    out.loss.backward()
    assert prompt.grad is not None and torch.isfinite(prompt.grad).all()


def test_mutations_change_the_prompt_as_named():
    prompt = torch.arange(24.0).view(1, 6, 4)
    cfg = ContrastiveConfig(drop_fraction=0.5)
    shuffled = mutate(prompt, "shuffle", cfg)
    assert sorted(shuffled[0, :, 0].tolist()) == prompt[0, :, 0].tolist()
    dropped = mutate(prompt, "drop", cfg)
    assert dropped.shape == (1, 3, 4)
    rows = dropped[0, :, 0].tolist()
    assert rows == sorted(rows) and set(rows) <= set(prompt[0, :, 0].tolist())
    assert not torch.equal(mutate(prompt, "noise", cfg), prompt)


def test_label_reinforce_by_hand():
    torch.manual_seed(0)
    scores = torch.tensor([[0.0, 0.0], [1.0, -1.0], [0.0, 2.0], [3.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 0])
    torch.manual_seed(1)
    out = OBJECTIVES.get("label_reinforce")(LabelReinforceConfig(rl_subset_size=4))(
        StepInputs({"labels": labels}, FixedScores(scores)))
    torch.manual_seed(1)  # replay the same draws
    subset = torch.randperm(4)[:4]
    dist = torch.distributions.Categorical(logits=scores[subset])
    action = dist.sample()
    reward = (action == labels[subset]).float()
    expected = -((reward - reward.mean()) * dist.log_prob(action)).mean()
    assert out.loss.item() == pytest.approx(expected.item(), abs=1e-7)
    assert out.metrics["rl_reward"] == pytest.approx(reward.mean().item())


@pytest.mark.parametrize("kind", ["verbalizer", "embedding"])
@pytest.mark.parametrize("name,config", [("mle", MLEConfig()), ("contrastive", ContrastiveConfig(k_negatives=3)),
                                         ("label_reinforce", LabelReinforceConfig(rl_subset_size=8))])
def test_each_term_moves_the_prompt(kind, name, config):
    clf, batch = make(kind)
    objective = OBJECTIVES.get(name)(config)
    prompt = clf.model.adapter.embeddings
    for seed in range(20):  # REINFORCE needs a draw where rewards differ; the others pass at once
        torch.manual_seed(seed)
        prompt.grad = None
        out = objective(StepInputs(dict(batch), clf))
        out.loss.backward()
        if prompt.grad is not None and prompt.grad.abs().sum() > 0:
            break
    assert prompt.grad is not None and prompt.grad.abs().sum() > 0, f"{name} does not reach the prompt"
    assert torch.isfinite(prompt.grad).all()


def test_verbalizer_scores_are_label_word_logsumexp():
    clf, batch = make("verbalizer")
    scores = clf.scores(batch)
    logits = clf.model(batch["input_ids"], batch["attention_mask"], logits_to_keep=1).logits[:, -1]
    tok = clf.tokenizer
    ids = [[tok(" " + w, add_special_tokens=False)["input_ids"][0] for w in ws] for ws in clf.label_words]
    expected = torch.stack([logits[:, i].logsumexp(-1) for i in ids], -1)
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)


def test_schedule_switches_at_the_configured_epoch():
    s = Schedule([Phase({"mle": 1.0}, epochs=3), Phase({"mle": 1.0, "contrastive": 0.5, "label_reinforce": 0.2})])
    assert [s.phase_index(e) for e in range(6)] == [0, 0, 0, 1, 1, 1]
    assert s.weights(2) == {"mle": 1.0}
    assert s.weights(3) == {"mle": 1.0, "contrastive": 0.5, "label_reinforce": 0.2}
    assert Schedule([Phase({"mle": 1.0}, epochs=0), Phase({"contrastive": 1.0})]).weights(0) == {"contrastive": 1.0}
    with pytest.raises(ConfigError):
        Schedule([Phase({"mle": 1.0}), Phase({"mle": 1.0})])
    with pytest.raises(ConfigError, match="k_negatives"):
        ContrastiveConfig(k_negatives=0)
