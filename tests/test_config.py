"""Experiment configs: YAML loading, defaults, overrides, sweeps, typed building."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from softprompt.config import (
    Override,
    Sweep,
    apply_overrides,
    build,
    deep_merge,
    dump_yaml,
    expand_sweeps,
    find_config,
    flatten,
    load_config,
    load_yaml,
    parse_override,
    to_dict,
)
from softprompt.errors import ConfigError


@dataclass
class Optim:
    lr: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    clip: float | Literal["auto"] | None = None


@dataclass
class Train:
    batch: int = 8
    optim: Optim = field(default_factory=Optim)
    schedule: Literal["constant", "cosine"] = "constant"
    max_steps: int | None = None
    tags: list[str] = field(default_factory=list)
    extra: dict[str, int] = field(default_factory=dict)


@dataclass
class Experiment:
    name: str
    train: Train = field(default_factory=Train)
    fp16: bool = False
    out: Path = Path("runs")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# -- override parsing -------------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("3", 3), ("-2", -2), ("0.1", 0.1), ("1e-3", 1e-3), ("2.5E4", 2.5e4), ("true", True), ("false", False),
    ("null", None), ("[1,2]", [1, 2]), ("{a: 1}", {"a": 1}), ("hello", "hello"), ("'3'", "3"), ('"true"', "true"),
    ("'a,b'", "a,b"), ("", ""), ("2024-01-01", "2024-01-01"), ("text:great movie", "text:great movie"),
    ("[unclosed", "[unclosed"), ("#1", "#1"), ("!!python/object/apply:os.system [echo hi]",
                                 "!!python/object/apply:os.system [echo hi]"),
])
def test_parse_override_types(raw, expected):
    ov = parse_override(f"a.b.c={raw}")
    assert ov == Override("a.b.c", expected, "set")
    assert type(ov.value) is type(expected)


def test_parse_override_sweep_and_modes():
    ov = parse_override("train.lr=0.3,1.0,2.0")
    assert isinstance(ov.value, Sweep) and ov.value == [0.3, 1.0, 2.0]
    assert parse_override("x=[1,2],[3,4]").value == [[1, 2], [3, 4]]
    assert parse_override("+new.key=1") == Override("new.key", 1, "add")
    assert parse_override("++k=1") == Override("k", 1, "force")
    assert parse_override("~train.lr") == Override("train.lr", None, "delete")
    for bad in ("noequals", "=3", "a..b=1", "~a=1"):
        with pytest.raises(ConfigError, match="bad override") as e:
            parse_override(bad)
        one_line(e)


def test_expand_sweeps():
    combos = expand_sweeps(["a=1,2", "c=5", "+b=x,y"])
    assert combos == [["a=1", "c=5", "+b=x"], ["a=1", "c=5", "+b=y"], ["a=2", "c=5", "+b=x"], ["a=2", "c=5", "+b=y"]]
    assert expand_sweeps(["a=1", "b=[1,2]"]) == [["a=1", "b=[1,2]"]]
    assert expand_sweeps([]) == [[]]


# -- applying overrides -----------------------------------------------------------------------

CFG = {"train": {"batch": 8, "lr": 0.1, "optim": {"name": "adam"}}, "method": {"num_virtual_tokens": 20}}


def test_apply_overrides_sets_and_copies():
    out = apply_overrides(CFG, ["train.batch=16", "train.optim.name=sgd", "train.lr=[1,2]"])
    assert out["train"] == {"batch": 16, "lr": [1, 2], "optim": {"name": "sgd"}}
    assert CFG["train"]["batch"] == 8  # input untouched


def test_unknown_key_suggests_closest():
    with pytest.raises(ConfigError) as e:
        apply_overrides(CFG, ["train.bach=3"])
    assert one_line(e) == "unknown config key 'train.bach' (did you mean 'train.batch'?)"
    with pytest.raises(ConfigError, match=r"'train\.optim\.nme' \(did you mean 'train\.optim\.name'\?\)"):
        apply_overrides(CFG, ["train.optim.nme=x"])
    with pytest.raises(ConfigError, match=r"\+zzz\.q="):
        apply_overrides(CFG, ["zzz.q=1"])
    with pytest.raises(ConfigError, match=r"^unknown config key 'zzz'; write \+zzz=\.\.\. to add a new key$"):
        apply_overrides(CFG, ["zzz=1"])
    with pytest.raises(ConfigError, match="'train.lr' is a float, not a section"):
        apply_overrides(CFG, ["train.lr.x=1"])


def test_add_delete_and_sweep_refused():
    out = apply_overrides(CFG, ["+train.warmup=5", "+eval.every=2", "~method.num_virtual_tokens", "++train.lr=1"])
    assert out["train"]["warmup"] == 5 and out["eval"] == {"every": 2} and out["method"] == {}
    assert out["train"]["lr"] == 1
    with pytest.raises(ConfigError, match="already exists"):
        apply_overrides(CFG, ["+train.batch=1"])
    with pytest.raises(ConfigError, match="unknown config key"):
        apply_overrides(CFG, ["~train.nothere"])
    with pytest.raises(ConfigError, match="sweep"):
        apply_overrides(CFG, ["train.lr=0.1,0.2"])


def test_alias():
    out = apply_overrides(CFG, ["method_cfg.num_virtual_tokens=10"], aliases={"method_cfg": "method"})
    assert out["method"]["num_virtual_tokens"] == 10
    with pytest.raises(ConfigError, match="'method.num_virtual_token'"):
        apply_overrides(CFG, ["method_cfg.num_virtual_token=10"], aliases={"method_cfg": "method"})
    # a prefix only matches whole segments
    with pytest.raises(ConfigError):
        apply_overrides(CFG, ["method_cfgx.num_virtual_tokens=1"], aliases={"method_cfg": "method"})


def test_flatten_and_merge():
    assert flatten({"a": {"b": 1, "c": {"d": [1]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1], "e": {}}
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1}
    assert deep_merge(base, {"a": {"y": [3]}, "c": 2}) == {"a": {"x": 1, "y": [3]}, "b": 1, "c": 2}
    assert base["a"]["y"] == [1, 2]


# -- files ------------------------------------------------------------------------------------

def test_defaults_merge(tmp_path):
    write(tmp_path / "base.yaml", "train:\n  batch: 8\n  lr: 1e-3\n  tags: [a, b]\nmodel: minilm-l6\n")
    write(tmp_path / "rl.yaml", "defaults: base\ntrain:\n  steps: 100\n")
    write(tmp_path / "exp.yaml", "defaults: [base, rl]\ntrain:\n  batch: 16\n  tags: [c]\n")
    cfg = load_config("exp", ["train.lr=0.5"], search=[tmp_path])
    assert cfg == {"train": {"batch": 16, "lr": 0.5, "tags": ["c"], "steps": 100}, "model": "minilm-l6"}
    assert load_config("exp", search=[tmp_path])["train"]["lr"] == 1e-3
    assert load_config(str(tmp_path / "exp.yaml"), search=[])["train"]["steps"] == 100


def test_defaults_cycle(tmp_path):
    write(tmp_path / "a.yaml", "defaults: [b]\nx: 1\n")
    write(tmp_path / "b.yaml", "defaults: [c]\n")
    write(tmp_path / "c.yaml", "defaults: [a]\n")
    with pytest.raises(ConfigError, match="cycle: a -> b -> c -> a") as e:
        load_config("a", search=[tmp_path])
    one_line(e)
    write(tmp_path / "d.yaml", "defaults: [{x: 1}]\n")
    with pytest.raises(ConfigError, match="'defaults' must be"):
        load_config("d", search=[tmp_path])


def test_find_config(tmp_path, monkeypatch):
    write(tmp_path / "sst2_ptcprl_minilm.yaml", "a: 1\n")
    write(tmp_path / "polychromic.yaml", "a: 1\n")
    assert find_config("sst2_ptcprl_minilm", search=[tmp_path]) == (tmp_path / "sst2_ptcprl_minilm.yaml").resolve()
    with pytest.raises(ConfigError) as e:
        find_config("sst2_ptcprl_minlm", search=[tmp_path])
    assert "(did you mean 'sst2_ptcprl_minilm'?)" in one_line(e) and "polychromic" in str(e.value)
    with pytest.raises(ConfigError, match="does not exist"):
        find_config(str(tmp_path / "missing.yaml"), search=[])
    # default search: ./configs in the current directory comes first
    (tmp_path / "configs").mkdir()
    write(tmp_path / "configs" / "local.yaml", "b: 2\n")
    monkeypatch.chdir(tmp_path)
    assert find_config("local") == (tmp_path / "configs" / "local.yaml").resolve()


def test_load_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml does not exist"):
        load_yaml(tmp_path / "missing.yaml")
    bad = write(tmp_path / "bad.yaml", "a: 1\nb: [1, 2\nc: 3\n")
    with pytest.raises(ConfigError) as e:
        load_yaml(bad)
    msg = one_line(e)
    assert msg.startswith(f"{bad}:") and "invalid YAML" in msg
    assert int(msg[len(str(bad)) + 1:].split(":")[0]) in (3, 4)
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_yaml(write(tmp_path / "list.yaml", "- 1\n- 2\n"))
    assert load_yaml(write(tmp_path / "empty.yaml", "")) == {}


def test_python_tags_never_run(tmp_path, monkeypatch):
    import os

    calls = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a) or 0)
    evil = write(tmp_path / "evil.yaml", 'cmd: !!python/object/apply:os.system ["echo hi"]\n')
    with pytest.raises(ConfigError, match=rf"{evil.name}:1: invalid YAML: .*python/object/apply"):
        load_yaml(evil)
    write(tmp_path / "evil2.yaml", "x: !!python/name:os.system\n")
    with pytest.raises(ConfigError):
        load_config("evil2", search=[tmp_path])
    # a dotted name is just a string: nothing is imported or called
    plain = load_yaml(write(tmp_path / "plain.yaml", "_target_: os.system\nx: os.system\n"))
    assert plain == {"_target_": "os.system", "x": "os.system"}
    assert calls == []


# -- typed configs ----------------------------------------------------------------------------

def test_build_nested_and_coercion():
    exp = build(Experiment, {"name": "e", "train": {"batch": 4, "optim": {"lr": 1, "betas": [0, 1]},
                                                      "schedule": "cosine", "max_steps": None, "tags": ["x"]},
                             "out": "runs/a"})
    assert exp.train.optim.lr == 1.0 and type(exp.train.optim.lr) is float
    assert exp.train.optim.betas == [0.0, 1.0] and exp.train.schedule == "cosine"
    assert exp.out == Path("runs/a") and exp.train.max_steps is None
    assert build(Experiment, {"name": "e", "train": {"max_steps": 5}}).train.max_steps == 5
    for clip, expected in ((1, 1.0), ("auto", "auto"), (None, None)):
        assert build(Optim, {"clip": clip}).clip == expected
    plain = to_dict(exp)
    assert plain["out"] == "runs/a" and plain["train"]["optim"] == {"lr": 1.0, "betas": [0.0, 1.0], "clip": None}


@pytest.mark.parametrize("data, pattern", [
    ({"name": "e", "train": {"batch": "3"}}, r"'train\.batch': expected int, got str '3'"),
    ({"name": "e", "train": {"batch": 2.5}}, r"'train\.batch': expected int, got float 2\.5"),
    ({"name": "e", "train": {"batch": True}}, r"'train\.batch': expected int, got bool True"),
    ({"name": "e", "fp16": 1}, r"'fp16': expected bool, got int 1"),
    ({"name": "e", "fp16": "yes"}, r"'fp16': expected bool"),
    ({"name": 3}, r"'name': expected str, got int 3"),
    ({"name": "e", "train": {"schedule": "linear"}},
     r"'train\.schedule'='linear': expected one of 'constant', 'cosine'"),
    ({"name": "e", "train": {"max_steps": "10"}}, r"'train\.max_steps': expected int"),
    ({"name": "e", "train": {"tags": "x"}}, r"'train\.tags': expected list\[str\], got str 'x'"),
    ({"name": "e", "train": {"tags": ["x", 1]}}, r"'train\.tags\[1\]': expected str, got int 1"),
    ({"name": "e", "train": {"extra": {"a": "b"}}}, r"'train\.extra\.a': expected int"),
    ({"name": "e", "train": 5}, r"'train': expected Train, got int 5"),
    ({"name": "e", "train": {"optim": {"lr": None}}}, r"'train\.optim\.lr': expected float, got None$"),
    ({"name": "e", "train": {"optim": {"clip": "x"}}},
     r"'train\.optim\.clip': expected float \| Literal\['auto'\] \| None, got str 'x'"),
])
def test_build_type_errors(data, pattern):
    with pytest.raises(ConfigError, match=pattern) as e:
        build(Experiment, data)
    one_line(e)


def test_build_unknown_and_missing_keys():
    with pytest.raises(ConfigError) as e:
        build(Experiment, {"name": "e", "train": {"optim": {"lrr": 0.1}}})
    msg = one_line(e)
    assert "unknown config key 'train.optim.lrr' (did you mean 'train.optim.lr'?)" in msg and "lr, betas" in msg
    with pytest.raises(ConfigError, match="missing required config key.*'name'"):
        build(Experiment, {"train": {}})
    with pytest.raises(ConfigError, match="'cfg.name'"):
        build(Experiment, {}, where="cfg")


def test_build_wraps_validation_errors():
    @dataclass
    class Checked:
        n: int = 1

        def __post_init__(self):
            if self.n < 1:
                raise ValueError(f"n={self.n}: expected a positive integer")

    with pytest.raises(ConfigError, match="sec: n=0: expected a positive integer"):
        build(Checked, {"n": 0}, where="sec")


def test_dump_yaml_roundtrip(tmp_path):
    exp = build(Experiment, {"name": "e", "train": {"optim": {"lr": 1e-4}}})
    path = tmp_path / "sub" / "config.yaml"
    dump_yaml(exp, path)
    text = path.read_text()
    assert text.index("name:") < text.index("train:") < text.index("fp16:")  # field order kept
    again = build(Experiment, load_yaml(path))
    assert again == exp
    dump_yaml({"a": (1, 2)}, path)
    assert yaml.safe_load(path.read_text()) == {"a": [1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]
