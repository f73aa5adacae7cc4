"""DAC-KL's learnable band neither collapses nor freezes; its switches (band vectors, target class,
band objective) and the SFT target and span weight each change what they should.

The band problem: 64 token rows over a 40-word vocabulary; fixed teacher logits; a student that cannot
follow the teacher (its logits are fixed and wrong), so only f_sub learns, with the Objective's own
optimizer settings (Adam at distill.band_lr). That is where the paper's joint training (f_sub descends
L_DAC alone) shrinks the band to nothing: the checks below fail on it, and pass under `coverage`."""

from __future__ import annotations

import pytest
import torch

from components.distill import Objective, build_examples, collate, student_loss_fn
from components.distill.data import Example
from components.distill.objective import distill_loss
from components.models.tiny import build_tiny_model
from semflow.config import DistillConfig, TinyModelConfig

V, N = 40, 64


def band_problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(N, V, generator=g) * 3.0
    student = torch.randn(N, V, generator=g) * 3.0  # wrong everywhere, and it stays so
    labels = torch.randint(0, V, (N,), generator=g)
    return teacher, student, labels


def train_band(steps=60, **settings):
    """Train only f_sub for `steps` Adam steps at band_lr; returns the per-step band stats."""
    cfg = DistillConfig(method="mgsr", top_k=16, kappa=50.0, w_sft=0.0, w_span=0.0, **settings)
    teacher, student, labels = band_problem()
    objective = Objective(cfg)
    params = [p for p in objective.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.band_lr) if params else None
    eye = torch.eye(V)
    pairs = torch.zeros(N, dtype=torch.bool)
    history = []
    for _ in range(steps):
        loss, stats = distill_loss(student, eye, teacher, eye, labels, pairs, objective, chunk_size=16)
        history.append(stats)
        if opt is not None:
            opt.zero_grad()
            loss.backward()
            opt.step()
    return history


def assert_band_alive(history, floor=0.7):
    """The band keeps a real share of the teacher's mass to the end: not collapsed."""
    last = history[-1]
    assert last["band_width"] > 0.1, f"band collapsed: width {last['band_width']:.4f}"
    assert last["band_coverage"] > floor, f"band collapsed: coverage {last['band_coverage']:.4f}"
    assert last["band_mass"] > 0.05, f"band collapsed: teacher mass in band {last['band_mass']:.4f}"


def assert_band_moved(history, at_least=0.05):
    first, last = history[0], history[-1]
    moved = abs(last["band_lower"] - first["band_lower"]) + abs(last["band_upper"] - first["band_upper"])
    assert moved > at_least, f"band never moved: l {first['band_lower']:.4f}->{last['band_lower']:.4f}, " \
                             f"u {first['band_upper']:.4f}->{last['band_upper']:.4f}"


def test_the_papers_joint_training_collapses_the_band_and_the_check_catches_it():
    history = train_band(steps=80, band_objective="joint")
    assert history[-1]["loss_dac"] < history[0]["loss_dac"]  # f_sub lowered L_DAC ... by emptying the band
    with pytest.raises(AssertionError, match="band collapsed"):
        assert_band_alive(history)


@pytest.mark.parametrize("vectors", ["normalised", "unnormalised"])
def test_the_coverage_objective_keeps_the_band_alive_and_moving(vectors):
    history = train_band(steps=80, band_objective="coverage", band_vectors=vectors)
    assert_band_alive(history, floor=DistillConfig().band_coverage - 0.1)
    assert_band_moved(history)
    # it moved within tens of steps at the default band_lr, not only at the end
    assert_band_moved(history[:40], at_least=0.02)


def test_a_frozen_band_never_moves_and_the_check_catches_it():
    history = train_band(steps=40, band_objective="frozen")
    assert history[0]["band_lower"] == history[-1]["band_lower"]
    with pytest.raises(AssertionError, match="band never moved"):
        assert_band_moved(history)


def test_dac_target_switch_picks_the_target_class():
    """label: the sequence's own token; teacher_argmax: the teacher's top token. With labels equal to the
    teacher's argmax the two agree exactly; with other labels they differ."""
    teacher, student, labels = band_problem()
    eye, pairs = torch.eye(V), torch.zeros(N, dtype=torch.bool)

    def dac(target, labels):
        objective = Objective(DistillConfig(method="mgsr", top_k=16, dac_target=target, w_span=0.0))
        return distill_loss(student, eye, teacher, eye, labels, pairs, objective)[1]["loss_dac"]

    argmax = teacher.argmax(-1)
    assert dac("label", argmax) == pytest.approx(dac("teacher_argmax", argmax), rel=1e-6)
    assert dac("label", labels) != pytest.approx(dac("teacher_argmax", labels), rel=1e-3)
    assert dac("teacher_argmax", labels) == pytest.approx(dac("teacher_argmax", argmax), rel=1e-6)


# ----------------------------------------------------------------------------------------- SFT targets
@pytest.fixture(scope="module")
def tiny():
    teacher, tok = build_tiny_model(TinyModelConfig(seed=1))
    student, _ = build_tiny_model(TinyModelConfig(seed=2, num_hidden_layers=1))
    return teacher, student, tok


def _grads(student, loss_fn, batch):
    student.zero_grad()
    loss, stats = loss_fn(batch)
    loss.backward()
    return loss.detach(), stats, torch.cat([p.grad.flatten() for p in student.parameters() if p.grad is not None])


def test_sft_never_trains_on_a_student_sample_but_on_its_target(tiny):
    """A row whose sequence the student sampled contributes no SFT gradient through that sequence; its
    SFT target (a teacher response) does, through the separate pass. Checked against the target trained
    as a supervised row: the same sum, divided by this batch's label tokens (4 sampled, not 3 target)."""
    teacher, student, _ = tiny
    prompt, sampled, target = [5, 6, 7], [40, 41, 42, 43], [60, 61, 62]
    sft_cfg = DistillConfig(method="mgsr", top_k=16, w_dac=0.0, w_span=0.0, band_objective="joint")  # SFT alone
    loss_fn = student_loss_fn(student, teacher, Objective(sft_cfg), chunk_size=4)
    unsupervised = collate([Example(prompt, sampled, [False] * 4, supervised=False, target=target)], 0)
    assert "sft_input_ids" in unsupervised
    loss_u, stats_u, grad_u = _grads(student, loss_fn, unsupervised)
    as_target = collate([Example(prompt, target, [False] * 3)], 0)  # the target trained as a supervised row
    loss_t, _, grad_t = _grads(student, loss_fn, as_target)
    assert float(loss_u) == pytest.approx(float(loss_t) * 3 / 4, rel=1e-5)
    assert stats_u["loss_sft"] == pytest.approx(float(loss_t) * 3 / 4, rel=1e-5)
    torch.testing.assert_close(grad_u, grad_t * 3 / 4, rtol=1e-4, atol=1e-6)
    # no target at all (sft_target: supervised_rows / none): no SFT term, no gradient
    nothing = collate([Example(prompt, sampled, [False] * 4, supervised=False, target=None)], 0)
    loss_n, _, grad_n = _grads(student, loss_fn, nothing)
    assert float(loss_n) == 0.0 and float(grad_n.abs().max()) == 0.0


@pytest.mark.parametrize("kind", ["teacher", "reference", "supervised_rows", "none"])
def test_training_data_sft_targets_per_setting(tiny, kind):
    import pandas as pd

    from components.distill.recipe import training_data
    from semflow.config import GenerationConfig

    _, _, tok = tiny
    responses = pd.DataFrame({
        "id": ["a", "b"], "split": ["train", "train"], "instruction": ["say hi", "say yo"], "input": ["", ""],
        "reference": ["hi there", None], "response": ["hello", "yo yo"], "finished": [True, True]})
    scrg = pd.DataFrame({
        "id": ["a", "b"], "split": ["train", "train"], "prompt_ids": [[1, 2], [1, 3]], "source": ["student", "teacher"],
        "revised_ids": [[70, 71, 2], tok("yo yo")["input_ids"] + [2]], "corrected": [True, False]})
    cfg = DistillConfig(method="mgsr", sft_target=kind)
    data = training_data("mgsr", responses, scrg, tok, GenerationConfig(), cfg)
    teacher_a = tok("hello")["input_ids"] + [2]
    reference_a = tok("hi there")["input_ids"] + [2]
    assert data.sequences[0] == [70, 71, 2]  # the SCRG-revised student sample trains the KD terms
    if kind == "teacher":
        assert data.supervised == [False, True] and data.targets == [teacher_a, None]
    elif kind == "reference":  # b has no reference: its teacher response stands in, so b needs no extra pass
        assert data.supervised == [False, True] and data.targets == [reference_a, None]
        assert data.references_replaced == 1
    elif kind == "supervised_rows":
        assert data.supervised == [False, True] and data.targets == [None, None]
    else:
        assert data.supervised == [False, False] and data.targets == [None, None]


# ------------------------------------------------------------------------------------------- span term
def test_w_span_changes_the_gradient_and_the_trained_weights(tiny):
    teacher, _, tok = tiny
    texts = ["the lazy dog sleeps", "a quick brown fox jumps"]
    prompts = [tok(f"q{i}")["input_ids"] for i in range(2)]
    seqs = [tok(t)["input_ids"] + [2] for t in texts]
    from components.distill.spans import PhraseChunker

    def run(w_span, steps):
        student, _ = build_tiny_model(TinyModelConfig(seed=2, num_hidden_layers=1))
        cfg = DistillConfig(method="mgsr", top_k=16, w_span=w_span)
        examples, _ = build_examples(tok, prompts, seqs, cfg, PhraseChunker("rules"))
        assert any(any(e.pairs) for e in examples)
        objective = Objective(cfg)
        loss_fn = student_loss_fn(student, teacher, objective, chunk_size=8)
        batch = collate(examples, 0)
        _, stats, grad = _grads(student, loss_fn, batch)
        opt = torch.optim.SGD(student.parameters(), lr=0.5)
        for _ in range(steps):
            opt.zero_grad()
            loss_fn(batch)[0].backward()
            opt.step()
        return stats, grad, torch.cat([p.detach().flatten() for p in student.parameters()])

    stats0, grad0, weights0 = run(0.0, 3)
    stats1, grad1, weights1 = run(1.0, 3)
    assert stats1["loss_span"] > 0 and stats0["loss_span"] == pytest.approx(stats1["loss_span"])
    assert not torch.allclose(grad0, grad1, rtol=0, atol=1e-9)
    assert float((weights0 - weights1).abs().max()) > 1e-7


@pytest.mark.parametrize("target", ["teacher", "reference"])
def test_warmup_trains_on_the_target_it_names(tmp_path, target):
    """student.warmup_target: the healed student writes what it was healed on (one prompt, memorised on
    purpose: the check is which sequence was the target, not generalisation)."""
    import pandas as pd

    from components.distill.recipe import heal_student
    from components.models.loading import LoadedModel
    from semflow.config import GenerationConfig, TrainerConfig

    teacher, tok = build_tiny_model(TinyModelConfig(seed=1))
    student, _ = build_tiny_model(TinyModelConfig(seed=2, num_hidden_layers=1))
    row = {"instruction": "say hi", "input": "", "reference": "hi there", "response": "yo yo yo", "finished": True}
    responses = pd.DataFrame([{"id": "a", "split": "train", **row}, {"id": "b", "split": "test", **row}])
    warmup = TrainerConfig(max_steps=40, lr=1e-2, batch_size=1, warmup_ratio=0.0, scheduler="constant_with_warmup",
                           checkpoint_every=40, eval_every=40)
    healed = heal_student(LoadedModel("t", teacher, tok, 0.0, "tiny"), LoadedModel("s", student, tok, 0.0, "tiny"),
                          responses, GenerationConfig(), warmup, tmp_path, DistillConfig(eval_max_new_tokens=8),
                          progress=False, eval_initial=False, target=target)
    wanted, other = ("hi there", "yo yo yo") if target == "reference" else ("yo yo yo", "hi there")
    text = healed.samples["student_healed"].iloc[0]
    assert text.startswith(wanted) and not text.startswith(other)


def test_kd_warmup_pulls_the_student_towards_the_teachers_distributions(tmp_path):
    """student.warmup_loss kd: the healed student's next-token distributions along the teacher's response
    move towards the teacher's (forward KL falls); SFT on the same response moves them to its tokens
    instead, away from a teacher that does not put all its mass there."""
    import copy

    import pandas as pd

    from components.distill.recipe import heal_student, training_data
    from components.models.loading import LoadedModel
    from semflow.config import GenerationConfig, TrainerConfig

    teacher, tok = build_tiny_model(TinyModelConfig(seed=1))
    student0, _ = build_tiny_model(TinyModelConfig(seed=2, num_hidden_layers=1))
    row = {"instruction": "say hi", "input": "", "reference": "hi there", "response": "yo yo yo", "finished": True}
    responses = pd.DataFrame([{"id": "a", "split": "train", **row}, {"id": "b", "split": "test", **row}])
    data = training_data("seqkd", responses, None, tok, GenerationConfig(), DistillConfig())
    ids = torch.tensor([data.prompts[0] + data.sequences[0]])
    span = slice(len(data.prompts[0]) - 1, ids.shape[1] - 1)  # the positions that predict the response

    def kl_to_teacher(model):
        with torch.no_grad():
            t = torch.log_softmax(teacher(ids).logits[0, span], -1)
            s = torch.log_softmax(model(ids).logits[0, span], -1)
        return float((t.exp() * (t - s)).sum(-1).mean())

    warmup = TrainerConfig(max_steps=30, lr=1e-2, batch_size=1, warmup_ratio=0.0, scheduler="constant_with_warmup",
                           checkpoint_every=30, eval_every=30)
    after = {}
    for loss in ("sft", "kd"):
        student = copy.deepcopy(student0)
        heal_student(LoadedModel("t", teacher, tok, 0.0, "tiny"), LoadedModel("s", student, tok, 0.0, "tiny"),
                     responses, GenerationConfig(), warmup, tmp_path / loss, DistillConfig(eval_max_new_tokens=4),
                     progress=False, eval_initial=False, loss=loss)
        after[loss] = kl_to_teacher(student)
    before = kl_to_teacher(student0)
    assert after["kd"] < 0.5 * before
    assert after["kd"] < 0.5 * after["sft"]


@pytest.mark.parametrize("target", ["teacher", "reference"])
def test_kd_warmup_adds_cross_entropy_on_the_references_only_for_target_reference(tmp_path, target):
    """warmup_loss kd: the loss is the forward KL alone with warmup_target teacher; with reference it is the
    KL plus the cross-entropy on the references (weight 1)."""
    import pandas as pd

    from components.distill.recipe import heal_student
    from components.models.loading import LoadedModel
    from semflow.config import GenerationConfig, TrainerConfig

    teacher, tok = build_tiny_model(TinyModelConfig(seed=1))
    student, _ = build_tiny_model(TinyModelConfig(seed=2, num_hidden_layers=1))
    row = {"instruction": "say hi", "input": "", "reference": "hi there", "response": "yo yo yo", "finished": True}
    responses = pd.DataFrame([{"id": "a", "split": "train", **row}, {"id": "b", "split": "test", **row}])
    warmup = TrainerConfig(max_steps=2, lr=1e-2, batch_size=1, checkpoint_every=2, eval_every=1)
    run = heal_student(LoadedModel("t", teacher, tok, 0.0, "tiny"), LoadedModel("s", student, tok, 0.0, "tiny"),
                       responses, GenerationConfig(), warmup, tmp_path, DistillConfig(eval_max_new_tokens=2),
                       progress=False, eval_initial=False, target=target, loss="kd")
    last = run.train.history[-1]
    expected = last["loss_kd_fkl"] + (last["loss_sft"] if target == "reference" else 0.0)
    assert last["loss_sft"] > 0 and last["loss"] == pytest.approx(expected, rel=1e-5)
