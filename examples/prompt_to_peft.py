"""Load a trained soft prompt into PEFT, through the library API (no CLI).

Takes a run folder (or trains a 2-step prompt when none is given), exports its prompt in
PEFT's prompt-tuning format, loads it with ``peft.PeftModel`` on the same backbone and checks
that both give the same next-token logits.

    python examples/prompt_to_peft.py [RUN_DIR]
"""

import sys
import tempfile

import torch

import softprompt
from softprompt.modeling.peft_interop import export_peft

if __name__ == "__main__":
    if len(sys.argv) > 1:
        run = sys.argv[1]
    else:
        run = softprompt.train("sst2_smollm2", ["run_id=peft-demo", "train.max_steps=2", "task.max_eval_examples=16"],
                               progress=False).run_dir
    model = softprompt.SoftPromptModel.from_pretrained(run)
    out = tempfile.mkdtemp()
    export_peft(model, out)

    from peft import PeftModel

    base = softprompt.load_backbone(model.backbone.spec).model  # PEFT gets its own copy of the backbone
    peft_model = PeftModel.from_pretrained(base, out).eval()
    tok = model.tokenizer
    ids = tok(["The acting was superb and the story moving."], return_tensors="pt")
    with torch.no_grad():
        ours = model(ids["input_ids"], ids["attention_mask"]).logits[0, -1]
        theirs = peft_model(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]).logits[0, -1]
    print(f"exported {run} to {out}; max |logit difference| = {float((ours - theirs).abs().max()):.2e}")
    assert torch.allclose(ours, theirs, atol=1e-4)
