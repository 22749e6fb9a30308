"""From a resolved ExperimentConfig to data, a classifier and a trainer.

Everything that can fail on bad input (config, data files, model spec, adapter options)
runs before the run folder is created, so a failed start leaves nothing behind that
``--resume`` would pick up.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, SoftPromptError
from ..modeling.backbones import unfreeze_top_layers
from ..modeling.generation import check_chat_template
from ..modeling.model import SoftPromptModel
from ..modeling.sft_data import conversation_of, response_of
from ..modeling.vllm_engine import check_vllm
from ..objectives.polychromic import reference_response
from ..rewards import RewardContext, RewardSet
from ..rewards.base import make_part
from ..runs import RunFolder
from ..runs.loading import (  # noqa: F401  (load_trained_classifier, build_classifier_for: re-exported)
    adapter_model,
    build_classifier,
    build_classifier_for,
    build_reward_model,
    config_backbone,
    load_trained_classifier,
    task_of,
)
from ..runs.tracking import check_trackers
from ..tasks import DataSource, find_source, get_task, read_split
from ..tasks.preferences import pairs_from_labels, read_preferences, split_pairs
from ..tasks.prompts import held_out_info, load_prompts
from .checkpoint import step_checkpoints
from .distributed import SHARDED, check_shardable
from .preflight import check_models
from .rollout import Policy, Reference
from .trainer import Data, Trainer, strategy_of
from .workloads import ClassificationWork, DPOWork, PreferenceWork, RLWork, SFTWork, count_overlong


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def task_source(config, task_name: str, file: str | None = None) -> DataSource:
    """Where ``task_name``'s examples come from under ``config.task`` (tasks.sources.find_source)."""
    t = config.task
    return find_source(task_name, file=file, data_dir=t.data_dir, dataset=t.dataset, dataset_config=t.dataset_config)


def load_data(config, task) -> Data:
    t = config.task
    sources = {}

    def split(name: str, file: str | None) -> list:
        source = task_source(config, task.name, file)
        sources[name] = source.to_dict()
        return read_split(source, task.name, name, text_column=t.text_column, text_pair_column=t.text_pair_column,
                          label_column=t.label_column)

    train = split(t.train_split, t.train_file)
    evaluation = split(t.eval_split, t.eval_file)
    if t.max_train_examples and len(train) > t.max_train_examples:  # a seeded random subset, not the file's head
        keep = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.seed))[:t.max_train_examples]
        train = [train[i] for i in sorted(keep.tolist())]
    if t.max_eval_examples:
        evaluation = evaluation[:t.max_eval_examples]
    return Data(train, evaluation, info={"data_source": sources})


def load_preference_data(config) -> tuple[Data, dict]:
    """(Data of PreferencePair, a summary: files, pair counts, rows skipped) for a reward model."""
    import logging

    p, seed = config.preferences, config.seed
    info: dict = {}
    if p.from_task:
        task = get_task(p.from_task)
        source = task_source(config, task.name)

        def pairs(split):
            examples = read_split(source, task.name, split)
            return pairs_from_labels(examples, p.positive_label, seed, min_words=p.min_words)
        train, evaluation = pairs(config.task.train_split), pairs(config.task.eval_split)
        info["source"] = f"{task.name} {config.task.train_split}/{config.task.eval_split} from {source.describe()}"
        info["data_source"] = source.to_dict()
    elif p.file:
        data = read_preferences(p.file)
        info.update(data.summary())
        if p.eval_file:
            held = read_preferences(p.eval_file)
            train, evaluation = data.pairs, held.pairs
            info["eval"] = held.summary()
        else:
            train, evaluation = split_pairs(data.pairs, p.eval_ratio, seed)
        skipped = data.skipped + info.get("eval", {}).get("skipped", 0)
        if skipped:
            logging.getLogger(__name__).warning("skipped %d preference rows with human_eval 2 or 3 (no preference)",
                                                skipped)
    else:
        raise ConfigError(f"method {config.method_name!r} needs preferences.file (an .xlsx/.csv/.jsonl preference "
                          "file) or preferences.from_task (e.g. sst2)")
    if p.max_train_pairs:
        train = train[:p.max_train_pairs]
    if p.max_eval_pairs:
        evaluation = evaluation[:p.max_eval_pairs]
    info.update({"train_pairs": len(train), "eval_pairs": len(evaluation)})
    return Data(train, evaluation), info


def warn_truncated_sampling(config) -> None:
    """One warning when an RL config samples with top-k / top-p, saying what the policy then is."""
    import logging

    g = config.generation
    if not (g.top_k or g.top_p < 1.0):
        return
    kl = ""
    if config.method.needs_reference:
        kl = (" The KL term is KL(truncated policy || untruncated reference softmax(ref logits / T)): finite, "
              "but not 0 at the start: -log of the reference's mass inside the truncation set, per token.")
    logging.getLogger("softprompt").warning(
        "generation.top_k=%s, top_p=%s: the RL policy is the distribution sampled from, softmax(logits / T) "
        "truncated to those tokens and renormalised; tokens outside the set have probability 0 under it. The old "
        "log-probs, the recomputed ones and the ratio are all under it (a sampled token that an update pushes out "
        "of the set is scored as if still in it, so log-probs stay finite).%s", g.top_k, g.top_p, kl)


def generation_prompts(config, backbone=None, device=None) -> tuple[list, list, dict, object]:
    """(train, eval, where they were read, the backbone if it had to load) of a generation method's
    prompt source: bad prompts fail before the model loads, unless the source counts tokens;
    conversations need ``generation.chat``."""
    loaded = [backbone]

    def tokenizer():  # only for prompt sources that count tokens: loads the backbone early
        loaded[0] = loaded[0] or config_backbone(config, device)
        return loaded[0].tokenizer
    read: dict = {}
    train, evaluation = load_prompts(config.prompts, config.seed, tokenizer, read)
    if not config.generation.chat and any("messages" in e.extra for e in train + evaluation):
        raise ConfigError(f"prompts from {config.prompts.file or config.prompts.source!r} are conversations (lists "
                          "of messages): set generation.chat=true so the chat template renders them")
    return train, evaluation, read, loaded[0]


def generation_backbone(config, backbone=None, device=None, who: str = "this method"):
    """``backbone`` (or the config's, loaded), checked to be a causal LM with a chat template when
    ``generation.chat`` is on; ``who`` names the method in the error."""
    backbone = backbone or config_backbone(config, device)
    if not backbone.is_causal:
        raise ConfigError(f"{who} needs a causal LM; {config.model.name!r} is an encoder")
    check_chat_template(backbone.tokenizer, config.generation.chat, config.model.name)
    return backbone


def build_rl(config, rewards=None, backbone=None, device=None):
    """(RLWork, Data) for an RL method: policy (+ value head), reference, rewards, judge, prompts.

    Library users may pass ``rewards`` (a RewardSet, or Python callables
    ``f(prompts, completions, examples) -> list[float]``) instead of ``config.rewards``, and a
    loaded ``backbone``. Every model of the run (reward models, judge, sentence and condition
    encoders) goes where the policy is: ``device``, or the loaded backbone's, or the default
    (:func:`config_backbone`); a reward item's own ``device`` key sends its model elsewhere.
    """
    method = config.method
    warn_truncated_sampling(config)
    train, evaluation, read, backbone = generation_prompts(config, backbone, device)
    if method.reference_responses is not None:
        for e in train:  # MLE on reference responses needs one per training prompt
            reference_response(e, method.reference_responses, config.prompts.file or config.prompts.source)
    backbone = generation_backbone(config, backbone, device, f"RL method {config.method_name!r}")
    unfrozen = unfreeze_top_layers(backbone.model, method.layers_unfrozen) if method.layers_unfrozen else []
    model = adapter_model(config, backbone)
    policy = Policy(model, value_head=method.value_head, tune_v_head=method.tunes_value_head, unfrozen=unfrozen)
    if config.generation.backend == "vllm":  # refused (prefix tuning, LoRA, ...) before anything slow loads
        check_vllm(model)
    reference = Reference(policy, method.reference) if method.needs_reference else None
    context = RewardContext(backbone=backbone, device=model.device, dtype=model.compute_dtype)
    if rewards is None:
        rewards = RewardSet.from_config(config.rewards, context)
    elif not isinstance(rewards, RewardSet):
        rewards = RewardSet.of(*(rewards if isinstance(rewards, (list, tuple)) else [rewards]))
    method.check_rewards(rewards)  # e.g. polychromic's multiplicative f needs rewards >= 0
    rewards.probe(evaluation)
    judge = make_part(config.judge, 0, context).fn if config.judge else None
    engine = config.generation.engine(model, seed=config.seed)  # None: the native backend
    work = RLWork(config, policy, rewards, reference, judge, base_lm=SoftPromptModel(backbone), engine=engine)
    work.data_info = {"train_prompts": len(train), "eval_prompts": len(evaluation), **read,
                      **held_out_info(train, evaluation, config.prompts.file or config.prompts.source)}
    limit = config.generation.max_prompt_tokens
    if limit:  # prompts are cut to their last `limit` tokens: say how many

        work.data_info.update(count_overlong(backbone.tokenizer, {"train": [e.text for e in train],
                                                                  "eval": [e.text for e in evaluation]},
                                             limit, "generation.max_prompt_tokens", "prompts"))
    return work, Data(train, evaluation)


def build_sft(config, backbone=None, device=None):
    """(SFTWork, Data) for ``method.name=sft``: the prompt sources' examples with their responses
    (checked before the model loads), a causal LM with the adapter."""
    method = config.method
    train, evaluation, read, backbone = generation_prompts(config, backbone, device)
    where = config.prompts.file or config.prompts.source
    check = conversation_of if config.generation.chat else response_of
    for e in train + evaluation:  # every example has something to learn, before the model loads
        check(e, method.response_field)
    if config.adapter.adapter_type == "conditional_prompt":
        raise ConfigError("method.name=sft trains prompt_tuning, prefix_tuning or lora; a conditional prompt needs "
                          "each example's condition, which SFT does not read yet")
    backbone = generation_backbone(config, backbone, device, "method sft")
    work = SFTWork(config, Policy(adapter_model(config, backbone)),
                   {"train_prompts": len(train), "eval_prompts": len(evaluation), **read,
                    **held_out_info(train, evaluation, where)})
    work.count_truncated(train, evaluation)
    return work, Data(train, evaluation)


def build_dpo(config, backbone=None, device=None):
    """(DPOWork, Data of PreferencePair) for ``method.name=dpo``: the pairs (checked before the model
    loads), a causal LM with the adapter, and the reference (the model without the adapter, or the
    adapter as it started)."""
    data, info = load_preference_data(config)
    prompt = config.method.empty_context_prompt
    empty = next((p for p in data.train + data.eval if not p.context), None)
    if empty is not None and not prompt:
        raise ConfigError(f"preference pair {empty.index} (line {empty.line}) has no context (prompt); pairs built "
                          "from a task have none: set method.empty_context_prompt, e.g. 'What did you think of the "
                          "film?'")
    if config.adapter.adapter_type == "conditional_prompt":
        raise ConfigError("method.name=dpo trains prompt_tuning, prefix_tuning or lora; not a conditional prompt")
    backbone = generation_backbone(config, backbone, device, "method dpo")
    policy = Policy(adapter_model(config, backbone))
    work = DPOWork(config, policy, Reference(policy, config.method.reference), info)
    return work, data


def make_trainer(config, resume: str | Path | None = None, progress: bool = True, rewards=None) -> Trainer:
    """The trainer for ``config`` (its run folder created, or ``resume``d). ``rewards``: Python
    reward functions for an RL method instead of ``config.rewards``."""
    check_models(config, rewards=rewards is None)  # a model that cannot load here fails first, in one line
    check_trackers([n for n in config.train.report_to if n != "none"])  # a missing extra too
    seed_everything(config.seed)
    state = process_state()
    device = state.device  # this process's GPU, or the CPU: every model of the run is loaded there
    if config.is_rl:
        work, data = build_rl(config, rewards=rewards, device=device)
    elif config.method.kind == "sft":
        work, data = build_sft(config, device=device)
    elif config.method.kind == "dpo":
        work, data = build_dpo(config, device=device)
    elif config.is_preference:
        data, info = load_preference_data(config)  # bad files fail here, before any folder exists
        model = adapter_model(config, config_backbone(config, device))
        work = PreferenceWork(config, build_reward_model(config, model), info)
        work.count_overlong(data.train, data.eval)
    else:
        task = task_of(config)
        data = load_data(config, task)  # bad data fails here, before any folder exists
        work = ClassificationWork(config, task, build_classifier(config, task, device=device))
        work.count_overlong(data.train, data.eval)
        work.data_info.update(data.info)  # where the examples came from, for data.json

    if (strategy := strategy_of(config.train)) in SHARDED:  # before the run folder exists
        check_shardable(work.module.model.model, strategy)
    run, path = _run_folder(config, resume, state)
    if state.num_processes > 1:  # same initial weights on every rank; each its own sampling noise after
        torch.manual_seed(config.seed * 1_000 + state.process_index)
    trainer = Trainer(config, work, data, run, run_path=path)
    if resume:
        trainer.resume()
    return trainer


def resume_point(path: Path) -> Path | None:
    """``path`` when a run cut off there resumes from its ``checkpoints/last`` (or a later
    ``step-<N>``), None for a new run; a folder that exists without a checkpoint is refused rather
    than overwritten."""
    if (path / "checkpoints" / "last").exists() or step_checkpoints(path / "checkpoints"):
        return path
    if path.exists():
        raise SoftPromptError(f"{path} exists without a checkpoint to resume; move it away and run again")
    return None


def train_once(config, path: Path, progress: bool = True) -> dict | None:
    """Train ``config`` into its run folder ``path`` unless it finished there before (None: its
    ``metrics.json`` is there); see :func:`resume_point`."""
    if (path / "metrics.json").exists():
        return None
    return make_trainer(config, resume=resume_point(path), progress=progress).fit(progress=progress)


def process_state():
    """accelerate's view of this process (rank, world size); starts the process group under torchrun."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def _run_folder(config, resume, state) -> tuple[RunFolder | None, Path]:
    """(the run folder on rank 0, None elsewhere; its path, known to every rank)."""
    from accelerate.utils import broadcast_object_list

    if resume:
        return (RunFolder(Path(resume)) if state.is_main_process else None), Path(resume)
    run = RunFolder.create(config) if state.is_main_process else None
    box = [run.path if run is not None else None]
    if state.num_processes > 1:
        broadcast_object_list(box, from_process=0)
    return run, box[0]
