"""Tasks: GLUE and table readers, their one-line errors, metrics, task definitions."""

from __future__ import annotations

import json
import math
import sys
import types
import warnings
from collections import Counter
from pathlib import Path

import pytest

from softprompt.errors import ConfigError, DataError
from softprompt.tasks import (
    METRICS,
    TASKS,
    Example,
    Task,
    accuracy,
    f1_accuracy,
    get_task,
    glue_name,
    load_split,
    matthews,
    pearson_spearman,
    read_glue,
    read_hub,
    read_table,
)

REAL_GLUE = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"


def write(path: Path, text: str, bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


@pytest.fixture
def glue(tmp_path) -> Path:
    """A tiny GLUE folder that copies every format quirk of the real files."""
    root = tmp_path / "glue"
    write(root / "SST-2" / "dev.tsv", "sentence\tlabel\nit 's a charming journey . \t1\nbleak and desperate \t0\n")
    # CoLA: no header, no newline after the last line, empty original_judgement on acceptable rows.
    write(root / "CoLA" / "dev.tsv", "gj04\t1\t\tThe sailors rode the breeze.\nbc01\t0\t*\tThe more does Bill.")
    write(root / "MRPC" / "train.tsv",
          "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
          "1\t702876\t702977\tHe called \" the witness \" .\tReferring to him as \" the witness \" .\n"
          "0\t2108705\t2108831\tYucaipa owned Dominick 's .\tYucaipa bought Dominick 's .\n", bom=True)
    write(root / "STS-B" / "train.tsv",
          "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
          "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\tAn air plane is taking off.\t5.000\n"
          "1\tmain-news\tMSRpar\t2012train\t0004\tnone\tnone\tA man plays.\tA woman sings.\t0.500\n"
          "2\tmain-forum\tdeft-forum\t2014\t0005\tnone\tnone\tI agree.\tI do agree.\t3.800\n")
    # RTE: the unbalanced quote on row 1 must not swallow row 2 (csv's default quoting would).
    write(root / "RTE" / "dev.tsv",
          "index\tsentence1\tsentence2\tlabel\n"
          "0\tHe said \"no weapons were found.\tWeapons were found.\tnot_entailment\n"
          "1\tDana Reeve died at 44.\tDana Reeve is dead.\tentailment\n")
    write(root / "WNLI" / "dev.tsv",
          "index\tsentence1\tsentence2\tlabel\n0\tThe drain is clogged with hair.\tThe hair is clogged.\t0\n"
          "1\tJane knocked but she did not answer.\tSusan did not answer.\t1\n")
    return root


# --- GLUE readers -----------------------------------------------------------------------------------

def test_sst2_strips_trailing_space(glue):
    ex = read_glue("SST-2", "dev", glue)
    assert [(e.text, e.label, e.index) for e in ex] == [("it 's a charming journey .", 1, 0),
                                                        ("bleak and desperate", 0, 1)]
    assert ex[0].text_pair is None


def test_cola_headerless_without_final_newline(glue):
    ex = read_glue("cola", "dev", glue)
    assert len(ex) == 2
    assert ex[1].text == "The more does Bill." and ex[1].label == 0
    assert ex[1].extra == {"source": "bc01", "original_judgement": "*"}
    assert ex[0].extra["original_judgement"] == ""


def test_mrpc_bom_header_and_quotes(glue):
    ex = read_glue("mrpc", "train", glue)
    assert [e.label for e in ex] == [1, 0]
    assert ex[0].text == 'He called " the witness " .'
    assert ex[0].text_pair == 'Referring to him as " the witness " .'
    assert ex[0].extra == {"#1 ID": "702876", "#2 ID": "702977"}


def test_stsb_float_scores(glue):
    ex = read_glue("STS-B", "train", glue)
    assert [e.label for e in ex] == [5.0, 0.5, 3.8]
    assert all(isinstance(e.label, float) for e in ex)
    assert ex[1].text_pair == "A woman sings." and ex[2].extra["genre"] == "main-forum"


def test_rte_unbalanced_quote_and_string_labels(glue):
    ex = read_glue("rte", "validation", glue)
    assert len(ex) == 2
    assert ex[0].text == 'He said "no weapons were found.'
    assert [e.label for e in ex] == [1, 0]  # not_entailment = 1, entailment = 0


def test_wnli_int_labels(glue):
    assert [e.label for e in read_glue("wnli", "dev", glue)] == [0, 1]


def test_task_names_accepted():
    assert [glue_name(n) for n in ("SST-2", "sst2", "CoLA", "sts_b", "STS-B", "MRPC", "rte", "WnLi")] == \
        ["sst2", "sst2", "cola", "stsb", "stsb", "mrpc", "rte", "wnli"]
    with pytest.raises(ConfigError, match="did you mean 'mrpc'"):
        glue_name("mprc")


def test_unknown_split(glue):
    with pytest.raises(ConfigError, match="expected 'train' or 'dev'"):
        read_glue("sst2", "test", glue)


# --- bad input: one line naming the file, the line and what was expected -------------------------------

def one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_missing_file_and_folder(glue, tmp_path):
    with pytest.raises(DataError) as e:
        read_glue("sst2", "train", glue)
    assert str(glue / "SST-2" / "train.tsv") in one_line(e) and "does not exist" in one_line(e)
    with pytest.raises(DataError, match="does not exist"):
        read_glue("sst2", "dev", tmp_path / "nowhere")
    with pytest.raises(DataError, match="does not exist"):
        read_table(tmp_path / "none.csv", "text", "label")


def test_missing_column_names_found_columns(tmp_path):
    f = write(tmp_path / "SST-2" / "dev.tsv", "text\tlabel\ngood\t1\n")
    with pytest.raises(DataError) as e:
        read_glue("sst2", "dev", tmp_path)
    msg = one_line(e)
    assert f"{f}, line 1" in msg and "missing column 'sentence'" in msg and "found columns 'text', 'label'" in msg


def test_too_few_fields(tmp_path):
    f = write(tmp_path / "RTE" / "dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta b\n")
    with pytest.raises(DataError) as e:
        read_glue("rte", "dev", tmp_path)
    msg = one_line(e)
    assert f"{f}, line 3" in msg and "too few fields, found 2; expected 4 tab-separated" in msg
    f = write(tmp_path / "CoLA" / "dev.tsv", "gj04\t1\t\tfine.\ngj04\t1\tmissing columns")
    with pytest.raises(DataError, match=f"{f}, line 2: too few fields, found 3; expected 4"):
        read_glue("cola", "dev", tmp_path)


def test_label_outside_task_set(tmp_path):
    f = write(tmp_path / "SST-2" / "dev.tsv", "sentence\tlabel\ngood\t1\nbad\t2\n")
    with pytest.raises(DataError) as e:
        read_glue("sst2", "dev", tmp_path)
    assert f"{f}, line 3" in one_line(e) and "label '2'" in one_line(e) and "allowed labels: '0', '1'" in one_line(e)
    write(tmp_path / "RTE" / "dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tcontradiction\n")
    with pytest.raises(DataError, match="line 2: label 'contradiction'.*allowed labels: 'entailment', 'not_entailment'"):
        read_glue("rte", "dev", tmp_path)


def test_bad_stsb_score(tmp_path):
    head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    f = write(tmp_path / "STS-B" / "dev.tsv", head + "0\tg\tf\ty\t0\tn\tn\ta\tb\t4.2\n1\tg\tf\ty\t1\tn\tn\ta\tb\thigh\n")
    with pytest.raises(DataError) as e:
        read_glue("stsb", "dev", tmp_path)
    assert f"{f}, line 3: score 'high' is not a number; expected a float from 0 to 5" in one_line(e)
    write(f, head + "0\tg\tf\ty\t0\tn\tn\ta\tb\t7.5\n")
    with pytest.raises(DataError, match="line 2: score '7.5' is out of range"):
        read_glue("stsb", "dev", tmp_path)


def test_empty_split(tmp_path):
    f = write(tmp_path / "WNLI" / "dev.tsv", "index\tsentence1\tsentence2\tlabel\n")
    with pytest.raises(DataError) as e:
        read_glue("wnli", "dev", tmp_path)
    assert f"{f}, line 2: no data rows" in one_line(e)
    write(tmp_path / "CoLA" / "train.tsv", "")
    with pytest.raises(DataError, match="line 1: no data rows"):
        read_glue("cola", "train", tmp_path)
    write(tmp_path / "SST-2" / "train.tsv", "")
    with pytest.raises(DataError, match="line 1: file is empty; expected a header line"):
        read_glue("sst2", "train", tmp_path)


def test_undecodable_bytes_name_file_and_line(tmp_path):
    f = tmp_path / "SST-2" / "dev.tsv"
    f.parent.mkdir()
    f.write_bytes("sentence\tlabel\ngood\t1\ncaf\u00e9\t1\n".encode("latin-1"))
    with pytest.raises(DataError) as e:
        read_glue("sst2", "dev", tmp_path)
    assert f"{f}, line 3" in one_line(e) and "not valid UTF-8" in one_line(e)


def test_empty_text(tmp_path):
    write(tmp_path / "SST-2" / "dev.tsv", "sentence\tlabel\n  \t1\n")
    with pytest.raises(DataError, match="line 2: column 'sentence' is empty"):
        read_glue("sst2", "dev", tmp_path)


# --- tables -------------------------------------------------------------------------------------------

def test_read_csv_with_quotes_and_label_map(tmp_path):
    f = write(tmp_path / "d.csv", 'review,stars,id\n"Great, really ""great""",pos,a\nmeh,neg,b\n')
    ex = read_table(f, "review", "stars", label_map={"neg": 0, "pos": 1})
    assert [(e.text, e.label, e.extra) for e in ex] == [('Great, really "great"', 1, {"id": "a"}), ("meh", 0, {"id": "b"})]
    with pytest.raises(DataError, match=r"line 3: label 'neg'.*allowed labels: 'pos'"):
        read_table(f, "review", "stars", label_map={"pos": 1})
    with pytest.raises(DataError, match=r"line 2: label 'pos' in 'stars' is not a class index"):
        read_table(f, "review", "stars")


def test_read_tsv_pairs_regression(tmp_path):
    f = write(tmp_path / "d.tsv", 'a\tb\ty\n"one\ttwo\t0.25\nthree\tfour\t1e1\n')
    ex = read_table(f, "a", "y", text_pair_column="b", regression=True)
    assert [(e.text, e.text_pair, e.label) for e in ex] == [('"one', "two", 0.25), ("three", "four", 10.0)]


def test_read_jsonl(tmp_path):
    rows = [{"q": "Is it?", "c": "It is.", "l": 1}, {"q": "No?", "c": "Yes.", "l": 0, "src": "x"}]
    f = write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    ex = read_table(f, "q", "l", text_pair_column="c")
    assert [(e.text, e.text_pair, e.label, e.index) for e in ex] == [("Is it?", "It is.", 1, 0), ("No?", "Yes.", 0, 1)]
    assert ex[1].extra == {"src": "x"}
    assert [e.label for e in read_table(f, "q", None)] == [None, None]


def test_table_errors(tmp_path):
    f = write(tmp_path / "d.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 1\n')
    with pytest.raises(DataError, match=f"{f}, line 2: not valid JSON .*expected one JSON object per line"):
        read_table(f, "text", "label")
    write(f, '{"text": "a", "label": 1}\n{"body": "b", "label": 0}\n')
    with pytest.raises(DataError, match="line 2: missing key 'text'; found keys 'body', 'label'"):
        read_table(f, "text", "label")
    write(f, '{"text": "a", "label": 1.5}\n')
    with pytest.raises(DataError, match="line 1: label 1.5 in 'label' is not a class index"):
        read_table(f, "text", "label")
    write(f, '[1, 2]\n')
    with pytest.raises(DataError, match="line 1: found a JSON list"):
        read_table(f, "text", "label")
    write(f, "\n")
    with pytest.raises(DataError, match="no data rows"):
        read_table(f, "text", "label")
    c = write(tmp_path / "d.csv", 'text,label\n"unclosed,1\n')
    with pytest.raises(DataError, match=f"{c}, line 2: malformed row .*expected standard CSV quoting"):
        read_table(c, "text", "label")
    write(c, "text,label\na,1,extra\n")
    with pytest.raises(DataError, match="line 2: too many fields, found 3; expected 2 comma-separated"):
        read_table(c, "text", "label")
    write(c, "text,label\na,3\n")
    with pytest.raises(DataError, match="line 2: label '3' in 'label' is outside the task's 2 classes"):
        read_table(c, "text", "label", num_labels=2)
    with pytest.raises(DataError, match="unsupported type '.txt'"):
        read_table(write(tmp_path / "d.txt", "x"), "text", "label")


def test_long_field_not_truncated(tmp_path):
    long = "word " * 60_000  # 300k characters, beyond csv's default field limit
    f = write(tmp_path / "d.tsv", f"text\tlabel\n{long}\t1\n")
    assert read_table(f, "text", "label")[0].text == long.strip()


# --- hub ----------------------------------------------------------------------------------------------

def test_read_hub_without_datasets(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(DataError, match="pip install datasets"):
        read_hub("glue/sst2", "train")


def test_read_hub_offline_and_rows(monkeypatch):
    from datasets import Dataset

    table = Dataset.from_list([{"sentence1": "a", "sentence2": "b", "label": 0, "idx": 0},
                               {"sentence1": "c", "sentence2": "d", "label": -1, "idx": 1}])
    fake = types.ModuleType("datasets")

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach the Hub\n(offline mode is enabled)")

    fake.load_dataset = offline
    monkeypatch.setitem(sys.modules, "datasets", fake)
    with pytest.raises(DataError) as e:
        read_hub("glue/sst2", "dev")
    assert "could not load dataset glue (sst2) [validation]: Couldn't reach the Hub (offline mode" in one_line(e)
    seen = {}

    def rows(path, config, split):
        seen.update(path=path, config=config, split=split)
        return table

    fake.load_dataset = rows
    ex = read_hub("glue/RTE", "dev")
    assert seen == {"path": "glue", "config": "rte", "split": "validation"}
    assert [(e.text, e.text_pair, e.label, e.extra) for e in ex] == [("a", "b", 0, {"idx": 0}), ("c", "d", None, {"idx": 1})]


# --- metrics ------------------------------------------------------------------------------------------

def test_accuracy():
    assert accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == {"accuracy": 0.5}


def test_matthews_by_hand():
    gold = [1, 1, 1, 0, 0, 0]
    pred = [1, 1, 0, 0, 0, 1]
    # TP=2 TN=2 FP=1 FN=1: (2*2 - 1*1) / sqrt(3*3*3*3) = 3/9
    out = matthews(gold, pred)
    assert out["mcc"] == pytest.approx(1 / 3) and out["accuracy"] == pytest.approx(4 / 6)


def test_f1_by_hand():
    gold = [1, 1, 1, 0, 0]
    pred = [1, 1, 0, 1, 0]
    # TP=2 FP=1 FN=1: precision 2/3, recall 2/3, F1 = 2/3
    assert f1_accuracy(gold, pred) == pytest.approx({"f1": 2 / 3, "accuracy": 3 / 5})


def test_pearson_spearman_by_hand():
    gold, pred = [1.0, 2.0, 3.0], [1.0, 2.0, 4.0]
    # deviations (-1, 0, 1) and (-4/3, -1/3, 5/3): r = 3 / (sqrt(2) * sqrt(42/9))
    r = 3 / (math.sqrt(2) * math.sqrt(42 / 9))
    out = pearson_spearman(gold, pred)
    assert out["pearson"] == pytest.approx(r) and out["spearman"] == pytest.approx(1.0)
    assert out["corr"] == pytest.approx((r + 1) / 2)
    assert pearson_spearman([3, 2, 1], [1, 2, 3])["spearman"] == pytest.approx(-1.0)


def test_constant_predictions_are_safe():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert matthews([0, 1, 1], [1, 1, 1]) == {"mcc": 0.0, "accuracy": pytest.approx(2 / 3)}
        assert f1_accuracy([0, 1, 1], [0, 0, 0])["f1"] == 0.0
        assert f1_accuracy([0, 0], [0, 0]) == {"f1": 0.0, "accuracy": 1.0}
        assert pearson_spearman([1.0, 2.0, 3.0], [2.5, 2.5, 2.5]) == {"pearson": 0.0, "spearman": 0.0, "corr": 0.0}
        assert pearson_spearman([1.0], [1.0])["corr"] == 0.0


def test_metric_input_errors():
    with pytest.raises(DataError, match="3 gold values but 2 predictions"):
        accuracy([1, 0, 1], [1, 0])
    with pytest.raises(DataError, match="no examples"):
        matthews([], [])
    assert METRICS.names() == ["accuracy", "f1_accuracy", "matthews", "pearson_spearman"]


# --- tasks --------------------------------------------------------------------------------------------

def test_glue_tasks_registered():
    assert TASKS.names() == ["cola", "mrpc", "rte", "sst2", "stsb", "wnli"]
    main = {n: get_task(n).main_metric for n in TASKS.names()}
    assert main == {"cola": "mcc", "mrpc": "f1", "rte": "accuracy", "sst2": "accuracy", "stsb": "corr",
                    "wnli": "accuracy"}
    for name in TASKS.names():
        t = get_task(name)
        assert t.regression == (name == "stsb") and len(t.label_words) == t.num_labels
        key = t.main_metric
        gold = [0.0, 1.0, 2.0] if t.regression else [0, 1, 1]
        assert t.compute_metrics(gold, gold)[key] == pytest.approx(1.0)
    assert get_task("STS-B").template.endswith("Similarity (0-5):")
    assert get_task("sst2").label_words[1][:2] == ["positive", "good"]
    assert get_task("rte").label_words[0][0] == "True" and get_task("wnli").label_words[1][0] == "True"


def test_get_task_typo():
    with pytest.raises(ConfigError, match="did you mean 'sst2'"):
        get_task("sst3")


def test_format_and_continuations():
    sst2, rte = get_task("sst2"), get_task("rte")
    assert sst2.format(Example("a {weird} film")) == "Review: a {weird} film\nSentiment:"
    assert rte.format(Example("P.", "H.")) == "P.\nQuestion: H. True or False?\nAnswer:"
    assert sst2.continuations()[0][0] == " negative" and sst2.continuations("")[0][0] == "negative"
    with pytest.raises(DataError, match="needs a text pair"):
        rte.format(Example("P."))


def test_task_validation():
    ok = dict(name="t", num_labels=2, label_words=[["no"], ["yes"]], template="{text}:", metric="accuracy",
              main_metric="accuracy")
    Task(**ok)
    for bad, msg in [({"template": "{sentence}:"}, "must use {text}"), ({"main_metric": "f1"}, "not computed"),
                     ({"metric": "acc"}, "did you mean 'accuracy'"), ({"label_words": [["no"]]}, "label words"),
                     ({"label_words": [["no"], ["no"]]}, "used by classes 0 and 1"),
                     ({"label_words": [[" no"], ["yes"]]}, "without surrounding spaces")]:
        with pytest.raises(ConfigError, match=msg):
            Task(**{**ok, **bad})


def test_load_split(glue, tmp_path):
    assert len(load_split("SST-2", "dev", data_dir=glue)) == 2
    f = write(tmp_path / "rte_dev.jsonl", '{"p": "A.", "h": "B.", "y": "not_entailment"}\n{"p": "C.", "h": "D.", "y": 0}\n')
    ex = load_split("rte", "dev", path=tmp_path / "rte_{split}.jsonl", text_column="p", text_pair_column="h",
                    label_column="y")
    assert [e.label for e in ex] == [1, 0]
    write(f, '{"p": "A.", "h": "B.", "y": 2}\n')
    with pytest.raises(DataError, match=f"{f}, line 1: label 2 in 'y' is not allowed"):
        load_split("rte", "dev", path=f, text_column="p", text_pair_column="h", label_column="y")
    with pytest.raises(ConfigError, match="set text_pair_column"):
        load_split("rte", "dev", path=f, text_column="p")
    with pytest.raises(ConfigError, match="did you mean 'text_column'"):
        load_split("sst2", "dev", path=f, text_colum="p")
    with pytest.raises(ConfigError, match="maps outside"):
        load_split("sst2", "dev", path=f, label_map={"x": 2})
    s = write(tmp_path / "s.csv", "a,b,score\nx,y,4.5\n")
    assert load_split("stsb", "train", path=s, text_column="a", text_pair_column="b", label_column="score")[0].label == 4.5


# --- the real shared GLUE files ----------------------------------------------------------------------

@pytest.mark.skipif(not REAL_GLUE.is_dir(), reason="shared GLUE folder not present")
def test_real_glue_counts():
    counts = {("SST-2", "dev"): 872, ("SST-2", "train"): 67349, ("CoLA", "train"): 8551, ("CoLA", "dev"): 1043,
              ("MRPC", "train"): 3668, ("MRPC", "dev"): 408, ("STS-B", "train"): 5749, ("STS-B", "dev"): 1500,
              ("RTE", "train"): 2490, ("RTE", "dev"): 277, ("WNLI", "train"): 635, ("WNLI", "dev"): 71}
    for (task, split), n in counts.items():
        ex = read_glue(task, split, REAL_GLUE)
        assert len(ex) == n, (task, split)
        assert [e.index for e in ex] == list(range(n))
    def labels(t, s):
        return Counter(e.label for e in read_glue(t, s, REAL_GLUE))

    assert labels("SST-2", "dev") == {1: 444, 0: 428}
    assert labels("CoLA", "dev") == {1: 721, 0: 322}
    assert labels("MRPC", "train") == {1: 2474, 0: 1194}
    assert labels("RTE", "dev") == {0: 146, 1: 131}
    assert labels("WNLI", "dev") == {1: 31, 0: 40}
    scores = [e.label for e in read_glue("STS-B", "train", REAL_GLUE)]
    assert min(scores) >= 0 and max(scores) <= 5 and sum(scores) / len(scores) == pytest.approx(2.70, abs=0.01)
