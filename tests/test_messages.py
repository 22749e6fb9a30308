"""TRL's conversational format wherever chat is: prompts as lists of role/content messages,
content as text or typed parts ([{"type": "text", "text": ...}], as Gemma-3 templates take), in
generation, generate_response and RL prompt files."""

import json

import pytest
from conftest import tiny_llama

from softprompt import SoftPromptModel
from softprompt.errors import ConfigError, DataError
from softprompt.experiment import from_dict
from softprompt.modeling.generation import apply_chat_template
from softprompt.rewards import RewardSet
from softprompt.tasks.prompts import read_prompt_file

# renders typed parts itself, like Gemma-3's template
PARTS = ("{% for m in messages %}{{ m['role'] }} {% if m['content'] is string %}{{ m['content'] }}{% else %}"
         "{% for p in m['content'] %}{% if p['type'] == 'text' %}{{ p['text'] }}{% endif %}{% endfor %}{% endif %} "
         "{% endfor %}")
# expects strings, like SmolLM2's: a list would come out as its Python repr
STRINGS = "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"


def tokenizer_with(template: str):
    tok = tiny_llama().tokenizer
    tok.chat_template = template
    return tok


@pytest.mark.parametrize("template", [PARTS, STRINGS])
def test_typed_parts_render_like_text(template):
    tok = tokenizer_with(template)
    as_text = [{"role": "user", "content": "the movie was"}]
    as_parts = [{"role": "user", "content": [{"type": "text", "text": "the movie was"}]}]
    assert apply_chat_template(tok, as_parts) == apply_chat_template(tok, as_text) == "user the movie was "


def test_several_parts_go_to_a_parts_template_as_they_are_and_join_by_newline_elsewhere():
    parts = [{"role": "user", "content": [{"type": "text", "text": "the movie"}, {"type": "text", "text": "was"}]}]
    tok = tokenizer_with(PARTS)
    assert apply_chat_template(tok, parts) == tok.apply_chat_template(parts, tokenize=False,
                                                                      add_generation_prompt=True)
    assert apply_chat_template(tokenizer_with(STRINGS), parts) == "user the movie\nwas "


@pytest.mark.parametrize("bad, why", [
    ([], "not a non-empty list"),
    ([{"content": "hi"}], "message 0 has no 'role'"),
    ([{"role": "user", "content": 3}], "message 0 has no 'content'"),
    ([{"role": "user", "content": [{"type": "image", "url": "x.png"}]}], "only text parts"),
])
def test_a_malformed_conversation_is_refused_with_the_reason(bad, why):
    model = SoftPromptModel(tiny_llama())
    model.tokenizer.chat_template = PARTS
    with pytest.raises(ConfigError, match=why):
        model.generate([bad], chat=True, max_new_tokens=1)


def test_generate_response_takes_typed_parts_in_the_history_and_the_question():
    model = SoftPromptModel(tiny_llama())
    model.tokenizer.chat_template = STRINGS
    history = [{"role": "user", "content": [{"type": "text", "text": "i loved it"}]},
               {"role": "assistant", "content": "so good"}]
    question = [{"type": "text", "text": "the plot was"}]
    reply, updated = model.generate_response(question, history, temperature=0.0, max_new_tokens=2)
    assert updated[:2] == history and updated[2] == {"role": "user", "content": question}
    plain = [{"role": "user", "content": "i loved it"}, {"role": "assistant", "content": "so good"}]
    same, _ = model.generate_response("the plot was", plain, temperature=0.0, max_new_tokens=2)
    assert reply == same  # the same rendered conversation, so the same greedy answer
    with pytest.raises(ConfigError, match="asked_question"):
        model.generate_response([{"type": "text", "text": "  "}], history)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_prompt_files_in_trls_conversational_format(tmp_path):
    rows = [{"prompt": [{"role": "system", "content": "be kind"},
                        {"role": "user", "content": [{"type": "text", "text": "the movie was"}]}], "topic": "x"},
            {"messages": [{"role": "user", "content": "i loved it"}, {"role": "assistant", "content": "so good"}]}]
    examples = read_prompt_file(write_jsonl(tmp_path / "p.jsonl", rows))
    assert [e.text for e in examples] == ["the movie was", "i loved it"]  # what rewards see: the last user turn
    assert examples[0].extra["messages"] == rows[0]["prompt"] and examples[0].extra["topic"] == "x"
    assert examples[1].extra["messages"] == rows[1]["messages"][:1]  # the assistant's turn is not prompt ...
    assert examples[1].extra["reference"] == "so good"  # ... but its reference response
    with pytest.raises(DataError, match=r"p2.jsonl:2: 'prompt': message 0 has no 'role'"):
        read_prompt_file(write_jsonl(tmp_path / "p2.jsonl", [rows[0], {"prompt": [{"content": "x"}]}]))
    with pytest.raises(DataError, match="no user message"):
        read_prompt_file(write_jsonl(tmp_path / "p3.jsonl", [{"prompt": [{"role": "system", "content": "x"}]}]))


def test_rl_rollouts_continue_the_conversation_and_need_chat(tmp_path):
    from softprompt.training.assemble import build_rl
    from softprompt.training.rollout import make_rollout

    conversation = [{"role": "system", "content": "be kind"},
                    {"role": "user", "content": [{"type": "text", "text": "the movie was"}]}]
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": conversation}, {"prompt": "i loved it"}])

    def raw(chat):
        return {"model": {"name": "tiny", "dtype": "float32"}, "output_dir": str(tmp_path), "seed": 0,
                "adapter": {"type": "prompt_tuning", "num_virtual_tokens": 2, "init": "random", "init_seed": 0},
                "method": {"name": "grpo", "group_size": 2},
                "prompts": {"source": "file", "file": str(path), "eval_file": str(path)},
                "generation": {"max_new_tokens": 2, "chat": chat}}
    backbone = tiny_llama()
    backbone.tokenizer.chat_template = STRINGS
    no_reward = [lambda p, c, e: [0.0] * len(c)]
    with pytest.raises(ConfigError, match="are conversations .* set generation.chat=true"):
        build_rl(from_dict(raw(False)), rewards=no_reward, backbone=backbone)
    work, data = build_rl(from_dict(raw(True)), rewards=no_reward, backbone=backbone)
    seen = []
    spy = RewardSet.of(lambda p, c, e: seen.extend(p) or [0.0] * len(c))
    ro = make_rollout(work.module, data.train[:1], work.gen, spy)
    ids = ro.gen.prompt_ids[0][ro.gen.prompt_mask[0].bool()]
    expected = backbone.tokenizer("system be kind user the movie was ", add_special_tokens=False)["input_ids"]
    assert ids.tolist()[-len(expected):] == expected
    assert seen == ["the movie was", "the movie was"]  # rewards see the user's text, once per sample
