"""Prompt tuning round-trips through PEFT's adapter format with the same logits."""

import pytest
import torch
from conftest import CAUSAL_FAMILIES, tiny_llama
from helpers import assert_paths_agree

from softprompt import (
    AdapterLoadError,
    PrefixTuningConfig,
    PromptTuningConfig,
    SoftPromptModel,
)
from softprompt.modeling.peft_interop import export_peft, import_peft

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


def test_peft_errors(tmp_path):
    model = SoftPromptModel.from_backbone(tiny_llama(), PrefixTuningConfig(num_virtual_tokens=2, init="random"))
    with pytest.raises(AdapterLoadError, match="supports prompt_tuning"):
        export_peft(model, tmp_path / "x")
    with pytest.raises(AdapterLoadError, match="does not exist"):
        import_peft(tmp_path / "nothing", tiny_llama())
