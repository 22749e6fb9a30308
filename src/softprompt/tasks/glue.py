"""The six GLUE tasks used by the source experiments, registered in ``TASKS``.

Label words follow the RLPT style: a few words per class, scored together with a
log-sum-exp. They are stored without a leading space (see :class:`Task`). Class order
matches the GLUE files: RTE 0 = entailment, 1 = not_entailment; WNLI 1 = entailment.
"""

from __future__ import annotations

from .base import Task, register_task

_PAIR_QA = "{text}\nQuestion: {text_pair} True or False?\nAnswer:"
_PAIR_SAME = "Sentence 1: {text}\nSentence 2: {text_pair}\n"
_TRUE = ["True", "true", "yes", "right"]
_FALSE = ["False", "false", "no", "wrong"]

SST2 = register_task(Task(
    name="sst2", num_labels=2,
    # SmolLM2 zero-shot, 300 dev sentences: 78% with these, 60% with terrible/bad/awful vs great/good/wonderful
    label_words=[["negative", "bad", "terrible"], ["positive", "good", "great"]],
    template="Review: {text}\nSentiment:",
    metric="accuracy", main_metric="accuracy", label_names=["negative", "positive"],
    description="SST-2 binary sentiment of movie-review sentences (1 = positive).",
))

COLA = register_task(Task(
    name="cola", num_labels=2,
    label_words=[["No", "no", "wrong", "incorrect"], ["Yes", "yes", "correct", "fine"]],
    template="Sentence: {text}\nIs this sentence grammatically correct? Answer:",
    metric="matthews", main_metric="mcc", label_names=["unacceptable", "acceptable"],
    description="CoLA grammatical acceptability (1 = acceptable); scored by Matthews correlation.",
))

STSB = register_task(Task(
    name="stsb", num_labels=0, label_words=[],
    template=_PAIR_SAME + "Similarity (0-5):",
    metric="pearson_spearman", main_metric="corr", regression=True,
    description="STS-B semantic similarity of a sentence pair, a float from 0 to 5.",
))

MRPC = register_task(Task(
    name="mrpc", num_labels=2,
    label_words=[["No", "no", "different"], ["Yes", "yes", "same"]],
    template=_PAIR_SAME + "Do both sentences mean the same thing? Answer:",
    metric="f1_accuracy", main_metric="f1", label_names=["not_equivalent", "equivalent"],
    description="MRPC paraphrase detection (1 = equivalent); scored by F1 of class 1 and accuracy.",
))

RTE = register_task(Task(
    name="rte", num_labels=2,
    label_words=[_TRUE, _FALSE],
    template=_PAIR_QA,
    metric="accuracy", main_metric="accuracy", label_names=["entailment", "not_entailment"],
    description="RTE textual entailment (0 = entailment, 1 = not_entailment, as in GLUE).",
))

WNLI = register_task(Task(
    name="wnli", num_labels=2,
    label_words=[_FALSE, _TRUE],
    template=_PAIR_QA,
    metric="accuracy", main_metric="accuracy", label_names=["not_entailment", "entailment"],
    description="WNLI Winograd NLI (1 = entailment); its dev set is adversarial.",
))

GLUE_TASKS = (SST2, COLA, STSB, MRPC, RTE, WNLI)
