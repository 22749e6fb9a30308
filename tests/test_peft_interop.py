"""Prompt tuning, prefix tuning and LoRA round-trip through PEFT's adapter format with the same logits
(PEFT loads what softprompt exports; softprompt imports what PEFT saves), and a merged LoRA folder."""

import pytest
import torch
from conftest import CAUSAL_FAMILIES, tiny_llama
from helpers import assert_paths_agree

from softprompt import (
    AdapterLoadError,
    LoRAConfig,
    PrefixTuningConfig,
    PromptTuningConfig,
    SoftPromptModel,
)
from softprompt.modeling.peft_interop import export_peft, import_peft, merge_lora

peft = pytest.importorskip("peft")


def _ids(tok, text):
    return tok(text, return_tensors="pt")["input_ids"]


def test_export_then_peft_load_gives_same_logits(family, tmp_path):
    build = CAUSAL_FAMILIES[family]
    model = SoftPromptModel.from_backbone(build(), PromptTuningConfig(num_virtual_tokens=4, init="random"))
    with torch.no_grad():
        model.adapter.embeddings.add_(torch.randn_like(model.adapter.embeddings))
    export_peft(model, tmp_path)
    peft_model = peft.PeftModel.from_pretrained(build().model, str(tmp_path)).eval()
    for text in ["the movie was great", "i loved it and the plot was fun"]:
        ids = _ids(model.tokenizer, text)
        ours = model(ids).logits
        theirs = peft_model(input_ids=ids).logits[:, 4:]  # PEFT also returns the virtual positions
        assert_paths_agree(ours, theirs, model)


def test_import_from_peft_gives_same_logits(family, tmp_path):
    from peft import PromptTuningConfig as PeftPromptTuningConfig
    from peft import get_peft_model

    torch.manual_seed(5)
    build = CAUSAL_FAMILIES[family]
    peft_model = get_peft_model(build().model, PeftPromptTuningConfig(task_type="CAUSAL_LM",
                                                                      num_virtual_tokens=6)).eval()
    peft_model.save_pretrained(str(tmp_path))
    model = import_peft(tmp_path, build())
    assert model.adapter.config.num_virtual_tokens == 6
    ids = _ids(model.tokenizer, "a boring film with bad actors")
    assert_paths_agree(model(ids).logits, peft_model(input_ids=ids).logits[:, 6:], model)


def _perturb(params) -> None:
    """Move trained weights off their init (LoRA's B starts at zero: the update would be nothing)."""
    with torch.no_grad():
        for p in params:
            p.add_(0.1 * torch.randn_like(p))


TEXTS = ["the movie was great", "i loved it and the plot was fun"]


# PEFT's prefix tuning passes the cache by transformers' old name (softprompt's own calls may not: pyproject.toml)
PEFT_OLD_CACHE_NAME = pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated:FutureWarning")


@PEFT_OLD_CACHE_NAME
@pytest.mark.parametrize("reparameterize", [False, True])
def test_prefix_export_then_peft_load_gives_same_logits(family, reparameterize, tmp_path):
    if reparameterize and family != "llama":
        pytest.skip("the MLP only changes how the prefix is produced, not its layout: one family")
    torch.manual_seed(1)
    build = CAUSAL_FAMILIES[family]
    model = SoftPromptModel.from_backbone(build(), PrefixTuningConfig(num_virtual_tokens=3, init="random",
                                                                      reparameterize=reparameterize,
                                                                      encoder_hidden_size=16))
    _perturb(model.adapter.parameters())
    export_peft(model, tmp_path)
    peft_model = peft.PeftModel.from_pretrained(build().model, str(tmp_path)).eval()
    assert peft_model.peft_config["default"].peft_type == "PREFIX_TUNING"
    plain = build().model
    for text in TEXTS:
        ids = _ids(model.tokenizer, text)
        with torch.no_grad():
            ours = model(ids).logits
            assert (ours - plain(input_ids=ids).logits).abs().max() > 1e-3  # the prefix is there to compare
            assert_paths_agree(ours, peft_model(input_ids=ids).logits, model)


@PEFT_OLD_CACHE_NAME
def test_prefix_import_from_peft_gives_same_logits(family, tmp_path):
    from peft import PrefixTuningConfig as PeftPrefixConfig
    from peft import get_peft_model

    torch.manual_seed(2)
    build = CAUSAL_FAMILIES[family]
    peft_model = get_peft_model(build().model, PeftPrefixConfig(task_type="CAUSAL_LM", num_virtual_tokens=5)).eval()
    _perturb(peft_model.prompt_encoder["default"].parameters())
    peft_model.save_pretrained(str(tmp_path))
    model = import_peft(tmp_path, build())
    assert model.adapter.config.adapter_type == "prefix_tuning" and model.adapter.config.num_virtual_tokens == 5
    ids = _ids(model.tokenizer, "a boring film with bad actors")
    with torch.no_grad():
        assert_paths_agree(model(ids).logits, peft_model(input_ids=ids).logits, model)


def test_lora_export_then_peft_load_gives_same_logits(family, tmp_path):
    torch.manual_seed(3)
    build = CAUSAL_FAMILIES[family]
    model = SoftPromptModel.from_backbone(build(), LoRAConfig(r=4, alpha=8))
    _perturb(model.adapter.trainable_parameters())
    export_peft(model, tmp_path)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in tmp_path.iterdir()}
    peft_model = peft.PeftModel.from_pretrained(build().model, str(tmp_path)).eval()
    loaded = {n for n, _ in peft_model.named_parameters() if "lora_" in n}
    assert len(loaded) == len(model.adapter.trainable_parameters())  # every LoRA weight found its module
    for text in TEXTS:
        ids = _ids(model.tokenizer, text)
        with torch.no_grad():
            ours = model(ids).logits
            with model.adapter.disabled():
                base = model(ids).logits
            assert (ours - base).abs().max() > 1e-3  # the update is there to compare
            assert_paths_agree(ours, peft_model(input_ids=ids).logits, model)


def test_lora_import_from_peft_gives_same_logits(family, tmp_path):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(4)
    build = CAUSAL_FAMILIES[family]
    peft_model = get_peft_model(build().model, LoraConfig(task_type="CAUSAL_LM", r=2, lora_alpha=6,
                                                          fan_in_fan_out=family == "gpt2")).eval()
    _perturb(p for n, p in peft_model.named_parameters() if "lora_" in n)
    peft_model.save_pretrained(str(tmp_path))
    model = import_peft(tmp_path, build())
    assert (model.adapter.config.r, model.adapter.config.alpha) == (2, 6)
    ids = _ids(model.tokenizer, "a boring film with bad actors")
    with torch.no_grad():
        assert_paths_agree(model(ids).logits, peft_model(input_ids=ids).logits, model)


def test_merged_lora_folder_is_a_plain_model_with_the_same_logits(family, tmp_path):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(5)
    model = SoftPromptModel.from_backbone(CAUSAL_FAMILIES[family](), LoRAConfig(r=4, alpha=8))
    _perturb(model.adapter.trainable_parameters())
    merge_lora(model, tmp_path)
    assert not any("lora" in p.name for p in tmp_path.iterdir())
    plain = AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    assert not any("lora_" in n for n, _ in plain.named_parameters())
    for text in TEXTS:
        ids = _ids(model.tokenizer, text)
        with torch.no_grad():  # W x + s B (A x) against (W + s B A) x: the same function, summed in another order
            assert_paths_agree(model(ids).logits, plain(input_ids=ids).logits, model)
    assert any("lora_" in n for n, _ in model.model.named_parameters())  # the model itself is untouched


def test_peft_errors(tmp_path, family):
    if family != "llama":
        pytest.skip("family-independent")
    with pytest.raises(AdapterLoadError, match="this model has no adapter"):
        export_peft(SoftPromptModel(tiny_llama()), tmp_path / "x")
    with pytest.raises(AdapterLoadError, match="does not exist"):
        import_peft(tmp_path / "nothing", tiny_llama())
    prompt = SoftPromptModel.from_backbone(tiny_llama(), PromptTuningConfig(num_virtual_tokens=2, init="random"))
    with pytest.raises(AdapterLoadError, match="merging folds a LoRA update"):
        merge_lora(prompt, tmp_path / "m")
    from peft import LoraConfig, get_peft_model

    get_peft_model(tiny_llama().model, LoraConfig(task_type="CAUSAL_LM", r=2, use_rslora=True)).save_pretrained(
        str(tmp_path / "rs"))
    with pytest.raises(AdapterLoadError, match=r"adapter_config.json: use_rslora=True is not supported"):
        import_peft(tmp_path / "rs", tiny_llama())


def test_export_command_writes_peft_and_merged_folders(tmp_path, family, capsys):
    if family != "llama":
        pytest.skip("the command is family-independent (the functions above run on each)")
    from conftest import save_backbone
    from test_trainer import config
    from transformers import AutoModelForCausalLM

    from softprompt.commands.cli import main
    from softprompt.experiment import from_dict
    from softprompt.training.assemble import make_trainer

    model_dir = save_backbone(tiny_llama(), tmp_path / "model")
    raw = config(tmp_path, model_dir, method={"name": "mle"}, train={"epochs": 1, "lr": 0.05})
    raw["adapter"] = {"type": "lora", "r": 2, "alpha": 4}  # replaces the prompt's options
    trainer = make_trainer(from_dict(raw), progress=False)
    trainer.fit(progress=False)
    run = trainer.run.path
    trained = SoftPromptModel.from_pretrained(str(run))
    ids = _ids(trained.tokenizer, "the movie was great")

    assert main(["export", str(run), str(tmp_path / "peft")]) == 0
    assert "PEFT adapter" in capsys.readouterr().out
    from softprompt.modeling.backbones import load_backbone

    peft_model = peft.PeftModel.from_pretrained(load_backbone(str(model_dir)).model, str(tmp_path / "peft")).eval()
    assert main(["export", str(run), str(tmp_path / "merged"), "--merge"]) == 0
    plain = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged")).eval()
    with torch.no_grad():
        ours = trained(ids).logits
        assert_paths_agree(ours, peft_model(input_ids=ids).logits, trained)
        assert_paths_agree(ours, plain(input_ids=ids).logits, trained)
    assert main(["export", str(run), str(tmp_path / "peft")]) == 2  # never overwrites
    assert "exists and is not empty" in capsys.readouterr().err
