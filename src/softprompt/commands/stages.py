"""Multi-stage experiments: one YAML whose ``stages`` train runs and act on them, in order.

    stages:
      - name: sft                      # a training stage: any experiment config
        config: glue_cola_smollm2      # a config name, a YAML path, or an inline mapping
        overrides: [train.max_steps=200]
      - name: rl
        config: {defaults: rlpt_grpo}
        init_from: sft                 # start the adapter from that stage's best checkpoint
      - name: glue
        action: glue_eval              # an action on earlier stages (see ACTIONS)
        run: rl
        tasks: [cola, stsb]
    presets:
      paper: [model=HuggingFaceTB/SmolLM-135M, sft.train.epochs=3]

``softprompt train --config-name X`` runs every stage. An override ``STAGE.key=value`` goes to
that stage; any other ``key=value`` to every training stage. Each training stage is a normal
run folder (``<run_id>-<stage>``); the pipeline's own folder,
``<output_dir>/pipelines/<name>/<run_id>/``, holds ``pipeline.json`` (every stage's folder,
metrics and seconds) and ``summary.md``. Started again with the same ``run_id``, finished stages
are kept, a cut one resumes from its last checkpoint, and actions whose output exists are skipped.
Every stage's config is resolved, and every training stage's models checked
(:func:`softprompt.training.preflight.check_models`), before the first folder is created.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..config import (
    apply_overrides,
    check_folder_name,
    find_config,
    load_config,
)
from ..config.registry import Registry
from ..errors import ConfigError, closest
from ..experiment import (
    ExperimentConfig,
    from_dict,
    preset_overrides,
    resolve,
    seed_aliases,
)
from ..runs import RunFolder, new_run_dir
from ..runs.loading import run_model
from ..storage import atomic_write, read_json, write_json
from ..training.assemble import train_once
from ..training.preflight import check_models
from .compare import compare
from .eval_gen import eval_gen_run
from .evaluate import evaluate_tasks

ACTIONS: Registry[Callable] = Registry("pipeline action")
_STAGE_KEYS = {"name", "config", "overrides", "init_from", "action"}


@dataclass
class Stage:
    name: str
    config: str | dict | None = None
    overrides: list[str] = field(default_factory=list)
    init_from: str | None = None
    action: str | None = None
    options: dict = field(default_factory=dict)  # an action's own keys


def is_pipeline(raw: dict) -> bool:
    return isinstance(raw, dict) and "stages" in raw


def parse_stages(raw: dict, where: str) -> list[Stage]:
    items = raw.get("stages")
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{where}: 'stages' must be a non-empty list of stages")
    reserved = {f for f in ExperimentConfig.__dataclass_fields__}
    stages, seen = [], set()
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ConfigError(f"{where}: stage {i + 1} must be a mapping with a 'name'")
        name = item["name"]
        if name in seen or name in reserved or not name.replace("_", "").isalnum():
            raise ConfigError(f"{where}: stage name {name!r} must be unique, alphanumeric, and not a config key")
        seen.add(name)
        if ("config" in item) == ("action" in item):
            raise ConfigError(f"{where}: stage {name!r} needs either 'config' (a training stage) or 'action' "
                              f"({', '.join(ACTIONS.names())})")
        stage = Stage(name=name, config=item.get("config"), overrides=list(item.get("overrides") or []),
                      init_from=item.get("init_from"), action=item.get("action"),
                      options={k: v for k, v in item.items() if k not in _STAGE_KEYS})
        if stage.action is not None:
            ACTIONS.get(stage.action)  # an unknown action fails now, with the names
        elif stage.options:
            raise ConfigError(f"{where}: training stage {name!r} has unknown keys {sorted(stage.options)}")
        if stage.init_from is not None and stage.init_from not in seen - {name}:
            raise ConfigError(f"{where}: stage {name!r} init_from={stage.init_from!r}: expected an earlier stage")
        stages.append(stage)
    return stages


_UNSET = "<unset>"


def _action_params(action: str) -> dict:
    """An action's keys: their defaults, or _UNSET for required ones."""
    import inspect

    return {k: (p.default if p.default is not inspect.Parameter.empty else _UNSET)
            for k, p in inspect.signature(ACTIONS.get(action)).parameters.items() if k not in ("pipe", "stage")}


def _check_action(stage: Stage, where: str) -> None:
    """An action's keys against its function's parameters: unknown or missing keys fail now."""
    params = _action_params(stage.action)
    for key in stage.options:
        if key not in params:
            raise ConfigError(f"{where}: stage {stage.name!r} ({stage.action}) has no key {key!r}"
                              f"{closest(key, list(params))}; its keys: {', '.join(params)}")
    missing = [k for k, default in params.items() if default is _UNSET and k not in stage.options]
    if missing:
        raise ConfigError(f"{where}: stage {stage.name!r} ({stage.action}) needs {', '.join(missing)}")


def _split_overrides(overrides: list[str], stages: list[Stage]) -> tuple[dict[str, list[str]], list[str], str | None]:
    """({stage: its overrides}, overrides for every training stage, the pipeline's run_id)."""
    names = {s.name for s in stages}
    per, common, run_id = {n: [] for n in names}, [], None
    for o in overrides:
        key, _, value = o.partition("=")
        head, _, rest = key.partition(".")
        if key == "run_id":
            run_id = value
        elif head in names and rest:
            per[head].append(f"{rest}={value}")
        else:
            common.append(o)
    return per, common, run_id


class Pipeline:
    def __init__(self, name: str, raw: dict, overrides: list[str] = (), preset: str | None = None,
                 console=None, progress: bool = True):
        raw = dict(raw)
        self.name, self.console, self.progress = name, console, progress
        overrides = [*preset_overrides(raw, preset, name), *overrides]
        self.output_dir = str(raw.pop("output_dir", "experiments"))
        self.stages = parse_stages(raw, name)
        extra = set(raw) - {"stages"}
        if extra:
            raise ConfigError(f"{name}: a pipeline config holds stages, presets and output_dir; unknown {sorted(extra)}")
        self.per_stage, self.common, run_id = _split_overrides(list(overrides), self.stages)
        for o in self.common:  # output_dir=X moves the stages' runs and the pipeline folder alike
            if o.startswith("output_dir="):
                self.output_dir = o.split("=", 1)[1]
        check_folder_name(run_id, "run_id")
        self.run_id = run_id or time.strftime("%Y%m%d-%H%M%S")
        self.path = Path(self.output_dir) / "pipelines" / name / self.run_id
        self.runs: dict[str, Path] = {}
        self.results: dict[str, dict] = {}

        for s in self.stages:  # an action's keys take overrides too: glue.max_samples=null
            if s.action is not None and self.per_stage[s.name]:
                every = {**_action_params(s.action), **s.options}  # any of its keys, set or not
                every = apply_overrides(every, self.per_stage[s.name])
                s.options = {k: v for k, v in every.items() if v is not _UNSET}
            if s.action is not None:
                _check_action(s, name)
        self.planned: dict[str, str] = {}  # each training stage's run folder, for ${stage} in later stages
        self.configs = {}
        for s in self.stages:  # every config resolved now: a bad key fails before any run
            if s.action is None:
                self.configs[s.name] = config = self._resolve(s)
                self.planned[s.name] = str(new_run_dir(config).parent / config.run_id)

    def _resolve(self, stage: Stage):
        overrides = [self._fill(o, stage) for o in [*stage.overrides, *self.common, *self.per_stage[stage.name]]]
        overrides.append(f"run_id={self.run_id}-{stage.name}")
        if stage.init_from is not None:
            overrides.append(f"init_from={self.planned[stage.init_from]}")
        if isinstance(stage.config, dict):
            import tempfile

            import yaml

            # an inline config: its defaults are looked up as usual (./configs, then the package's)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / f"{stage.name}.yaml"
                data = self._fill(dict(stage.config), stage)
                if isinstance(data.get("defaults"), str):
                    data["defaults"] = [data["defaults"]]
                data["defaults"] = [str(find_config(d)) for d in data.get("defaults", [])]
                path.write_text(yaml.safe_dump(data))
                return resolve(path, overrides)
        return resolve(stage.config, overrides)

    def _fill(self, value, stage: Stage):
        """``${NAME}`` in a stage's config or overrides -> the run folder of earlier training stage NAME."""
        if isinstance(value, dict):
            return {k: self._fill(v, stage) for k, v in value.items()}
        if isinstance(value, list):
            return [self._fill(v, stage) for v in value]
        if not isinstance(value, str) or "${" not in value:
            return value
        import re

        def one(m):
            name = m.group(1)
            if name not in self.planned:
                raise ConfigError(f"{self.name}: stage {stage.name!r} refers to ${{{name}}}; expected an earlier "
                                  f"training stage ({', '.join(self.planned) or 'none'})")
            return self.planned[name]
        return re.sub(r"\$\{(\w+)\}", one, value)

    def _say(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text)

    def check_models(self) -> None:
        """Every training stage's models can load here (:func:`check_models`), before any folder exists."""
        for stage, config in self.configs.items():
            check_models(config, f"{self.name}: stage {stage!r}: ")

    def run(self) -> dict:
        self.check_models()  # a later stage's model must not fail after an earlier stage made its folder
        self.path.mkdir(parents=True, exist_ok=True)
        state_file = self.path / "pipeline.json"
        done = read_json(state_file) if state_file.exists() else {}
        for i, stage in enumerate(self.stages, 1):
            self._say(f"[bold][{i}/{len(self.stages)}] {stage.name}[/bold]"
                      + (f" ({stage.action})" if stage.action else ""))
            start = time.perf_counter()
            if stage.action is None:
                result = self._train(stage)
            else:
                result = ACTIONS.get(stage.action)(self, stage, **stage.options)
            previous = next((r for r in done.get("stages", []) if r.get("name") == stage.name), {})
            seconds = time.perf_counter() - start
            if result.pop("_skipped", False):
                seconds = previous.get("seconds", seconds)
            self.results[stage.name] = {**result, "seconds": round(seconds, 1)}
            write_json(state_file, {"name": self.name, "run_id": self.run_id,  # a list: the stages' order
                                    "stages": [{"name": k, **v} for k, v in self.results.items()]})
        write_summary(self.path / "summary.md", self.name, self.results)
        return self.results

    def _train(self, stage: Stage) -> dict:
        path = Path(self.planned[stage.name])
        self.runs[stage.name] = path
        self._say(f"  run folder: {path}")
        metrics = train_once(self.configs[stage.name], path, progress=self.progress)
        if metrics is None:
            self._say("  finished before: kept")
            return {"run": str(path), "metrics": read_json(path / "metrics.json"), "_skipped": True}
        return {"run": str(path), "metrics": metrics}

    def run_of(self, stage_name: str, action: str) -> Path:
        if stage_name not in self.runs:
            raise ConfigError(f"{self.name}: {action} names run {stage_name!r}, not an earlier training stage "
                              f"({', '.join(self.runs) or 'none yet'})")
        return self.runs[stage_name]


def write_summary(path: Path, name: str, results: dict[str, dict]) -> None:
    lines = [f"# {name}", "", "| stage | seconds | folder / output | main numbers |", "| --- | ---: | --- | --- |"]
    for stage, r in results.items():
        shown = r.get("summary") or _main_numbers(r.get("metrics", {}))
        lines.append(f"| {stage} | {r.get('seconds', 0):.0f} | {r.get('run') or r.get('out', '')} | {shown} |")
    for stage, r in results.items():
        if r.get("table"):
            lines += ["", f"## {stage}", "", *r["table"]]
    text = "\n".join(lines) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _main_numbers(metrics: dict, limit: int = 6) -> str:
    skip = ("runtime", "per_second", "loss", "before_", "base_")
    keys = [k for k, v in metrics.items() if k.startswith("eval_") and isinstance(v, (int, float))
            and not any(s in k for s in skip)]
    return ", ".join(f"{k.removeprefix('eval_')} {metrics[k]:.4g}" for k in keys[:limit])


# -- actions ------------------------------------------------------------------------------------

@ACTIONS.register("glue_eval")
def glue_eval(pipe: Pipeline, stage: Stage, runs: list[str], tasks: list[str], base: bool = True,
              max_samples: int | None = None, split: str = "dev", data_dir: str | None = None) -> dict:
    """Score the named stages' prompts on GLUE tasks (each task's template and label words), and
    the base model alone when ``base``: ``<stage>.json`` and a table with the differences to base."""
    paths = {name: pipe.run_of(name, "glue_eval") for name in runs}
    out = pipe.path / f"{stage.name}.json"
    results = read_json(out) if out.exists() else {}
    skipped = bool(results) and all(name in results for name in runs) and ("base" in results or not base)
    first = RunFolder(next(iter(paths.values()))).read_config()
    data_dir = data_dir or first.task.data_dir
    if base and "base" not in results:
        model = first.model.name
        pipe._say(f"  base model {model}: {', '.join(tasks)}")
        results["base"] = evaluate_tasks(list(tasks), None, model, data_dir, split, max_samples)
        write_json(out, results)
    for name, path in paths.items():
        if name not in results:
            pipe._say(f"  {name}: {', '.join(tasks)}")
            results[name] = evaluate_tasks(list(tasks), str(path), None, data_dir, split, max_samples)
            write_json(out, results)
    columns = (["base"] if base else []) + list(runs)
    head = "| task | metric | " + " | ".join(columns) + " |" + "".join(f" {r} - base |" for r in runs if base)
    table = [head, "| --- | --- |" + " ---: |" * (len(columns) + (len(runs) if base else 0))]
    for task in tasks:
        for key in _glue_keys(results[runs[-1]][task]):
            vals = [results[c][task].get(key) for c in columns]
            cells = [f"{v:.4f}" if v is not None else "" for v in vals]
            if base:
                cells += [f"{results[r][task][key] - results['base'][task][key]:+.4f}" for r in runs]
            table.append(f"| {task} | {key.removeprefix('eval_')} | " + " | ".join(cells) + " |")
    last = results[runs[-1]]
    summary = ", ".join(f"{t} {_glue_keys(last[t])[0].removeprefix('eval_')} {last[t][_glue_keys(last[t])[0]]:.3f}"
                        for t in tasks)
    return {"out": str(out), "results": results, "table": table, "_skipped": skipped,
            "summary": f"{runs[-1]}: {summary}"}


def _glue_keys(metrics: dict) -> list[str]:
    order = ["eval_mcc", "eval_pearson", "eval_spearman", "eval_f1", "eval_accuracy"]
    return [k for k in order if k in metrics] or [k for k in metrics if k.startswith("eval_")][:1]


@ACTIONS.register("chat")
def chat(pipe: Pipeline, stage: Stage, run: str, conversations: list[dict], base: bool = True,
         temperature: float = 0.0, max_new_tokens: int = 96) -> dict:
    """``generate_response(question, history)`` with a stage's prompt (and the base model): each
    conversation is ``{history: [{role, content}, ...], question: ...}``; writes ``<stage>.jsonl``."""
    import json

    path = pipe.run_of(run, "chat")
    if not isinstance(conversations, list) or not all(isinstance(c, dict) and c.get("question")
                                                      for c in conversations):
        raise ConfigError(f"{pipe.name}: stage {stage.name!r} conversations must be a list of "
                          "{history: [...], question: ...}")
    config = RunFolder(path).read_config()
    tuned = run_model(path, config)  # in the run's model.dtype, on the GPU when there is one
    rows = []
    for i, c in enumerate(conversations):
        history = list(c.get("history") or [])
        row = {"conversation": i, "history": history, "question": c["question"]}
        for label in ["tuned", *(["base"] if base else [])]:
            with tuned.untouched() if label == "base" else contextlib.nullcontext():  # base: no adapter, LoRA off
                reply, _ = tuned.generate_response(c["question"], history, temperature=temperature,
                                                   max_new_tokens=max_new_tokens, seed=0,
                                                   chat_template_kwargs=config.generation.chat_template_kwargs)
            row[label] = reply
        rows.append(row)
    out = pipe.path / f"{stage.name}.jsonl"
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    atomic_write(out, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    table = ["| question | base | tuned |", "| --- | --- | --- |"] + [
        f"| {_cell(r['question'])} | {_cell(r.get('base', ''))} | {_cell(r['tuned'])} |" for r in rows]
    return {"out": str(out), "table": table, "summary": f"{len(rows)} conversations"}


def _cell(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[:limit - 1] + "…"


@ACTIONS.register("eval_gen")
def eval_gen(pipe: Pipeline, stage: Stage, runs: list[str], n: int = 10, k: str = "1,5,10",
             verifier: str | None = None, max_embed_per_set: int | None = None) -> dict:
    """``softprompt eval-gen`` on each named stage's run (skipped where its output exists)."""
    done = []
    for name in runs:
        path = pipe.run_of(name, "eval_gen")
        if not (path / "eval_gen" / "metrics.json").exists():
            eval_gen_run(str(path), n=n, ks=k, verifier=verifier, max_embed_per_set=max_embed_per_set,
                         progress=pipe.progress)
        done.append(str(path / "eval_gen"))
    return {"out": ", ".join(done), "summary": f"{len(done)} runs, n={n}"}


@ACTIONS.register("compare")
def compare_runs(pipe: Pipeline, stage: Stage, runs: list[str], baseline: str | None = None) -> dict:
    """``softprompt compare`` over the named stages' runs; the report lands in the pipeline folder."""
    paths = [str(pipe.run_of(name, "compare")) for name in runs]
    base = str(pipe.run_of(baseline, "compare")) if baseline else paths[0]
    out = pipe.path / stage.name
    compare(paths, baseline=base, out=str(out))
    return {"out": str(out / "report.md"), "summary": f"{len(paths)} runs against {Path(base).name}"}


def load_source(name: str, overrides: list[str] = (), preset: str | None = None, console=None,
                progress: bool = True) -> Pipeline | ExperimentConfig:
    """Config ``name`` read once: the Pipeline of a config with ``stages``, else its resolved
    ExperimentConfig (with the preset and overrides applied)."""
    raw = load_config(name, normalize=seed_aliases)
    if is_pipeline(raw):
        return Pipeline(Path(find_config(str(name))).stem, raw, list(overrides), preset, console, progress)
    return from_dict(raw, list(overrides), preset=preset, where=str(name))


def load_pipeline(name: str, overrides: list[str] = (), preset: str | None = None, console=None,
                  progress: bool = True) -> Pipeline | None:
    """The Pipeline of config ``name`` when it has ``stages``, else None (a single-run config)."""
    raw = load_config(name)
    if not is_pipeline(raw):
        return None
    return Pipeline(Path(find_config(str(name))).stem, raw, list(overrides), preset, console, progress)


def run_pipeline(name: str, overrides: list[str] = (), preset: str | None = None, console=None,
                 progress: bool = True) -> dict[str, Any]:
    pipe = load_pipeline(name, overrides, preset, console, progress)
    if pipe is None:
        raise ConfigError(f"{name} has no 'stages': train it with softprompt train --config-name {name}")
    return pipe.run()
