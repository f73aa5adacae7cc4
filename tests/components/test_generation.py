import pytest

from components.generation import format_prompts, generate
from components.models import load_model
from semflow.config import GenerationConfig, ModelConfig


@pytest.fixture(scope="module")
def tiny():
    loaded = load_model(ModelConfig(spec="tiny-random", device="cpu"))
    return loaded.model, loaded.tokenizer


QUESTIONS = ["a", "bb bb", "ccc ccc ccc ccc ccc", "dddd" * 10, "e", "ff"]


def rendered(tokenizer):
    return format_prompts(tokenizer, QUESTIONS, [""] * len(QUESTIONS))


def test_prompts_use_the_chat_template_or_plain_text(tiny):
    _, tok = tiny
    out = format_prompts(tok, ["Summarise.", "Hi"], ["Some text", ""], system_prompt="Be brief.")
    assert out[0] == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nSummarise.\n\nSome text<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    saved = tok.chat_template
    try:
        tok.chat_template = None
        assert format_prompts(tok, ["Hi"], ["x"]) == ["Hi\n\nx\n\n"]
    finally:
        tok.chat_template = saved


def test_greedy_output_does_not_depend_on_batch_size(tiny):
    model, tok = tiny
    one = generate(model, tok, rendered(tok), GenerationConfig(max_new_tokens=10, batch_size=1), progress=False)
    four = generate(model, tok, rendered(tok), GenerationConfig(max_new_tokens=10, batch_size=4), progress=False)
    assert one.token_ids == four.token_ids  # left padding + attention mask done right
    assert len({tuple(t) for t in one.token_ids}) > 1  # the outputs really depend on the prompt
    assert one.new_tokens == [10] * len(QUESTIONS)


def test_sampling_is_reproducible_by_seed(tiny):
    model, tok = tiny
    cfg = GenerationConfig(max_new_tokens=10, batch_size=4, do_sample=True, temperature=1.0, top_k=50, seed=7)
    a = generate(model, tok, rendered(tok), cfg, progress=False)
    b = generate(model, tok, rendered(tok), cfg, progress=False)
    c = generate(model, tok, rendered(tok), cfg.model_copy(update={"seed": 8}), progress=False)
    assert a.token_ids == b.token_ids and a.texts == b.texts
    assert a.token_ids != c.token_ids


def test_generation_stops_at_eos_and_counts_tokens_before_it(tiny):
    model, tok = tiny
    prompts = rendered(tok)[:1]
    free = generate(model, tok, prompts, GenerationConfig(max_new_tokens=6), progress=False)
    third = free.token_ids[0][2]
    saved = model.generation_config.eos_token_id
    try:
        # Make the token the model greedily writes third an EOS: generation must stop right there.
        model.generation_config.eos_token_id = [saved, third]
        stopped = generate(model, tok, prompts, GenerationConfig(max_new_tokens=6), progress=False)
    finally:
        model.generation_config.eos_token_id = saved
    assert stopped.finished == [True] and free.finished == [False]
    expected = free.token_ids[0][: free.token_ids[0].index(third)]
    assert stopped.token_ids[0] == expected and stopped.new_tokens == [len(expected)]


def test_long_prompts_keep_their_last_tokens(tiny):
    model, tok = tiny
    prompts = ["x" * 50, "short"]
    out = generate(model, tok, prompts, GenerationConfig(max_new_tokens=2, max_prompt_tokens=20), progress=False)
    assert out.truncated == [30, 0]
    assert out.prompt_tokens == [20, 5]
