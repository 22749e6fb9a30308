"""Where a task's data comes from (softprompt.tasks.sources): a file with a column mapping, a GLUE
folder, a datasets dataset, SOFTPROMPT_DATA, the hub's GLUE; and the error when none is there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from softprompt.errors import ConfigError, DataError
from softprompt.tasks import find_source, load_split
from softprompt.tasks.prompts import PromptsSection, load_prompts

ROOT = Path(__file__).resolve().parents[1]
ROWS = [("a charming , funny film", 1), ("dull and far too long", 0), ("the best thing this year", "positive")]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def glue_folder(root: Path, sentences: list[tuple[str, int]], task_folder: str = "SST-2") -> Path:
    lines = "".join(f"{text}\t{label}\n" for text, label in sentences)
    for split in ("train", "dev"):
        write(root / task_folder / f"{split}.tsv", "sentence\tlabel\n" + lines)
    return root


# -- which source ------------------------------------------------------------------------------------

def test_a_file_beats_data_dir_beats_dataset_beats_the_environment_beats_the_hub(tmp_path, monkeypatch):
    env = glue_folder(tmp_path / "env", [("from the environment", 1)])
    mine = glue_folder(tmp_path / "mine", [("from task.data_dir", 0)])
    monkeypatch.setenv("SOFTPROMPT_DATA", str(env))

    source = find_source("sst2", file="x_{split}.csv", data_dir=mine)
    assert (source.kind, source.location) == ("file", "x_{split}.csv")
    source = find_source("sst2", data_dir=mine)
    assert (source.kind, source.location, source.origin) == ("glue_dir", str(mine), "task.data_dir")
    assert [e.text for e in load_split("sst2", "dev", data_dir=mine)] == ["from task.data_dir"]
    source = find_source("sst2", dataset="someone/reviews", dataset_config="en")
    assert (source.kind, source.location, source.config, source.origin) == ("dataset", "someone/reviews", "en",
                                                                            "task.dataset")
    assert find_source("rte", dataset="nyu-mll/glue").config == "rte"  # the GLUE dataset's config: the task
    source = find_source("sst2")
    assert (source.kind, source.location, source.origin) == ("glue_dir", str(env), "SOFTPROMPT_DATA")
    assert [e.text for e in load_split("sst2", "dev")] == ["from the environment"]
    source = find_source("cola")  # SOFTPROMPT_DATA has no CoLA folder: the hub
    assert (source.kind, source.location, source.config, source.origin) == ("dataset", "nyu-mll/glue", "cola",
                                                                            "default")
    monkeypatch.delenv("SOFTPROMPT_DATA")
    assert find_source("sst2").origin == "default"
    with pytest.raises(ConfigError, match=r"task.data_dir=.* and task.dataset=d are both set; give one"):
        find_source("sst2", data_dir=mine, dataset="d")


# -- files with a column mapping ---------------------------------------------------------------------

def test_csv_tsv_jsonl_and_parquet_read_the_same_examples_through_the_column_mapping(tmp_path):
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    write(tmp_path / "r.csv", "id,review,stars\n" + "".join(f'{i},"{t}",{y}\n' for i, (t, y) in enumerate(ROWS)))
    write(tmp_path / "r.tsv", "id\treview\tstars\n" + "".join(f"{i}\t{t}\t{y}\n" for i, (t, y) in enumerate(ROWS)))
    write(tmp_path / "r.jsonl", "".join(json.dumps({"id": i, "review": t, "stars": y}) + "\n"
                                        for i, (t, y) in enumerate(ROWS)))
    pq.write_table(pa.table({"id": [0, 1, 2], "review": [t for t, _ in ROWS], "stars": [str(y) for _, y in ROWS]}),
                   tmp_path / "r.parquet")
    expected = [(t, [1, 0, 1][i]) for i, (t, _) in enumerate(ROWS)]
    for suffix in ("csv", "tsv", "jsonl", "parquet"):
        examples = load_split("sst2", "train", path=tmp_path / f"r.{suffix}", text_column="review",
                              label_column="stars")
        assert [(e.text, e.label) for e in examples] == expected, suffix
        assert str(examples[2].extra["id"]) == "2"


def test_parquet_pairs_regression_and_the_split_in_the_file_name(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"a": ["A man plays.", "I agree."], "b": ["A woman sings.", "I do agree."],
                             "score": [0.5, 3.8]}), tmp_path / "stsb_dev.parquet")
    examples = load_split("stsb", "dev", path=tmp_path / "stsb_{split}.parquet", text_column="a",
                          text_pair_column="b", label_column="score")
    assert [(e.text, e.text_pair, e.label) for e in examples] == [("A man plays.", "A woman sings.", 0.5),
                                                                  ("I agree.", "I do agree.", 3.8)]


def test_a_bad_column_or_row_names_the_file_and_the_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "r.parquet"
    pq.write_table(pa.table({"review": ["good", "bad"], "stars": [1, 7]}), path)
    with pytest.raises(DataError, match=rf"^{path}: missing column 'text', 'label'; found columns 'review', 'stars'$"):
        load_split("sst2", "train", path=path)
    with pytest.raises(DataError, match=rf"^{path}, row 2: label 7 in 'stars' is not allowed"):
        load_split("sst2", "train", path=path, text_column="review", label_column="stars")
    write(tmp_path / "r.csv", "review,stars\ngood,1\n")
    with pytest.raises(DataError, match=r"r.csv, line 1: missing column 'txt'; found columns 'review', 'stars'"):
        load_split("sst2", "train", path=tmp_path / "r.csv", text_column="txt", label_column="stars")
    write(tmp_path / "broken.parquet", "not parquet")
    with pytest.raises(DataError, match=r"broken.parquet: not a readable Parquet file"):
        load_split("sst2", "train", path=tmp_path / "broken.parquet")


# -- datasets ----------------------------------------------------------------------------------------

def test_a_dataset_saved_to_disk_through_task_dataset(tmp_path):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features({"review": Value("string"), "stars": ClassLabel(names=["negative", "positive"])})
    split = Dataset.from_dict({"review": ["a fine film", "a dull film"], "stars": [1, 0]}, features=features)
    DatasetDict(train=split, validation=split.select([1])).save_to_disk(str(tmp_path / "reviews"))
    folder = str(tmp_path / "reviews")
    dev = load_split("sst2", "dev", dataset=folder, text_column="review", label_column="stars")  # dev: validation
    assert [(e.text, e.label) for e in dev] == [("a dull film", 0)]
    assert len(load_split("sst2", "train", dataset=folder, text_column="review", label_column="stars")) == 2
    with pytest.raises(DataError, match=rf"dataset {folder} \[train\]: missing column 'text', 'label'; found "
                                        r"columns 'review', 'stars'"):
        load_split("sst2", "train", dataset=folder)
    with pytest.raises(DataError, match=r"has no split 'test'; its splits: train, validation"):
        load_split("sst2", "test", dataset=folder, text_column="review", label_column="stars")
    split.save_to_disk(str(tmp_path / "one"))
    with pytest.raises(DataError, match="holds a single unnamed split; expected a DatasetDict"):
        load_split("sst2", "train", dataset=str(tmp_path / "one"))


def test_a_copy_of_the_hub_glue_is_read_with_glue_columns_and_hidden_labels(tmp_path):
    from datasets import Dataset, DatasetDict

    rows = {"sentence1": ["P one.", "P two."], "sentence2": ["H one.", "H two."], "label": [1, -1], "idx": [0, 1]}
    DatasetDict(validation=Dataset.from_dict(rows)).save_to_disk(str(tmp_path / "rte"))
    examples = load_split("rte", "dev", dataset=str(tmp_path / "rte"))
    assert [(e.text, e.text_pair, e.label, e.extra) for e in examples] == [
        ("P one.", "H one.", 1, {"idx": 0}), ("P two.", "H two.", None, {"idx": 1})]


def test_a_run_records_the_dataset_it_read_in_data_json(tmp_path, llama):
    import json

    from datasets import Dataset, DatasetDict

    from softprompt.experiment import from_dict
    from softprompt.tasks import get_task
    from softprompt.training.assemble import load_data

    texts = ["the movie was great", "the film was bad", "i loved it", "i hated it"]
    split = Dataset.from_dict({"sentence": texts, "label": [1, 0, 1, 0]})
    DatasetDict(train=split, validation=split).save_to_disk(str(tmp_path / "sst2"))
    config = from_dict({"task": {"name": "sst2", "dataset": str(tmp_path / "sst2")}})
    data = load_data(config, get_task("sst2"))  # the GLUE task's own columns: sentence, label
    assert [e.text for e in data.eval] == texts
    assert data.info == {"data_source": {
        split_name: {"kind": "dataset", "location": str(tmp_path / "sst2"), "config": None, "origin": "task.dataset"}
        for split_name in ("train", "dev")}}
    assert json.loads(json.dumps(data.info)) == data.info  # what data.json holds


# -- nothing there -----------------------------------------------------------------------------------

def test_with_no_data_and_offline_the_error_says_how_to_get_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("SOFTPROMPT_DATA", "HF_DATASETS_CACHE")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), HF_DATASETS_CACHE=str(tmp_path / "hf" / "datasets"),
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]))  # this checkout's code
    out = subprocess.run([sys.executable, "-m", "softprompt", "make-preferences", "--task", "cola", "--out", "p.jsonl"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    error = out.stderr.strip()
    assert len(error.splitlines()) == 1 and "Traceback" not in error, error
    assert error.startswith("error: no data for task 'cola': task.data_dir and task.dataset are not set, "
                            "SOFTPROMPT_DATA is not set, and the hub dataset nyu-mll/glue (cola) is not available "
                            "(HF_HUB_OFFLINE=1: only the datasets cache is read)"), error
    for hint in ("task.data_dir=DIR", "SOFTPROMPT_DATA=DIR", "DIR/CoLA/train.tsv", "task.dataset",
                 "python -c \"import datasets; datasets.load_dataset('nyu-mll/glue', 'cola')\""):
        assert hint in error, hint
    assert not (tmp_path / "p.jsonl").exists()


def test_review_openings_fall_back_to_the_built_in_ones_only_when_nothing_was_named(tmp_path, monkeypatch):
    import softprompt.tasks.data as data

    hub = []

    def offline(name, split, config=None):
        hub.append((name, config, split))
        raise DataError(f"could not load dataset {name} ({config}) [{split}]: offline")

    monkeypatch.setattr(data, "open_dataset", offline)
    monkeypatch.delenv("SOFTPROMPT_DATA", raising=False)
    info: dict = {}
    train, held = load_prompts(PromptsSection(num_eval=8), info=info)
    assert len(train) + len(held) == 226 and info["data_source"].startswith("built-in review openings")
    assert hub == []  # optional data: review_openings never downloads, so the RL configs stay offline
    with pytest.raises(DataError, match="no data for task 'sst2': prompts.data_dir and prompts.dataset"):
        load_prompts(PromptsSection(source="sentence_splits", task="sst2", label_scores=[0.0, 1.0]),
                     tokenizer=lambda: None)
    assert hub == [("nyu-mll/glue", "sst2", "train")]  # RLPT's sentences have no built-in stand-in
    with pytest.raises(DataError, match="GLUE folder .*missing does not exist"):
        load_prompts(PromptsSection(data_dir=str(tmp_path / "missing")))  # a folder that was named must be there
    long = [(f"this is review number {i} of a film that went on and on for hours", i % 2) for i in range(40)]
    monkeypatch.setenv("SOFTPROMPT_DATA", str(glue_folder(tmp_path / "glue", long)))
    train, held = load_prompts(PromptsSection(num_eval=8), info=info)
    assert len(held) == 8 and all(e.extra["source_sentence"].startswith("this is review") for e in held)
    assert info["data_source"] == {"sst2/dev": {"kind": "glue_dir", "location": str(tmp_path / "glue"),
                                                "config": None, "origin": "SOFTPROMPT_DATA"}}


def test_a_task_of_ones_own_reads_files_or_a_dataset_never_glue(tmp_path, monkeypatch):
    from datasets import Dataset, DatasetDict

    from softprompt.tasks import TASKS, Task, register_task

    monkeypatch.setattr(TASKS, "_items", dict(TASKS._items))  # the task is this test's own: gone after it
    register_task(Task(name="topic_test", num_labels=2, label_words=[["sports"], ["politics"]],
                       template="{text}\nTopic:", metric="accuracy", main_metric="accuracy",
                       label_names=["sports", "politics"]))
    monkeypatch.setenv("SOFTPROMPT_DATA", str(tmp_path))  # a GLUE folder is no place for it
    with pytest.raises(ConfigError, match="task 'topic_test' has no data: give task.train_file and task.eval_file"):
        load_split("topic_test", "train")
    rows = Dataset.from_dict({"headline": ["Cup final tonight", "Vote on the budget"], "topic": ["sports", "politics"]})
    DatasetDict(train=rows).save_to_disk(str(tmp_path / "news"))
    examples = load_split("topic_test", "train", dataset=str(tmp_path / "news"), text_column="headline",
                          label_column="topic")
    assert [(e.text, e.label) for e in examples] == [("Cup final tonight", 0), ("Vote on the budget", 1)]
