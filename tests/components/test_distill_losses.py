"""Each loss: zero on identical distributions, positive otherwise, gradients where they belong, and the
chunked computation equal to the full-logits one."""

import math

import pytest
import torch
import torch.nn.functional as F

from components.distill.losses import (
    BandPredictor,
    dac_kl,
    forward_kl,
    jsd,
    reverse_kl,
    skew_forward_kl,
    skew_reverse_kl,
    span_correlation,
)
from components.distill.objective import Objective, distill_loss
from semflow.config import DistillConfig

DIVERGENCES = [forward_kl, reverse_kl, jsd, skew_forward_kl, skew_reverse_kl]
METHODS = ["mgsr", "sft", "seqkd", "kd_fkl", "kd_rkl", "jsd", "skew_fkl", "skew_rkl", "gkd"]


def logits(n=6, v=50, seed=0, scale=3.0):
    return torch.randn(n, v, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.mark.parametrize("fn", DIVERGENCES)
def test_divergence_is_zero_on_identical_and_positive_otherwise(fn):
    t, s = logits(seed=0), logits(seed=1)
    assert fn(t, t).abs().max() < 1e-5
    assert (fn(t, s) > 1e-3).all()


def test_forward_kl_matches_torch_kl_div_and_tau_scales_logits():
    t, s = logits(seed=0), logits(seed=1)
    ref = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="none").sum(-1)
    assert torch.allclose(forward_kl(t, s), ref, atol=1e-5)
    assert torch.allclose(forward_kl(t, s, tau=2.0), forward_kl(t / 2, s / 2), atol=1e-6)
    assert torch.allclose(reverse_kl(t, s), forward_kl(s, t))


def test_jsd_half_is_symmetric_and_bounded_by_log2():
    t, s = logits(seed=0, scale=10), logits(seed=1, scale=10)
    assert torch.allclose(jsd(t, s, 0.5), jsd(s, t, 0.5), atol=1e-6)
    assert (jsd(t, s, 0.5) <= torch.log(torch.tensor(2.0)) + 1e-6).all()
    with pytest.raises(ValueError, match="beta"):
        jsd(t, s, 1.0)


def test_skew_zero_alpha_is_plain_kl():
    t, s = logits(seed=0), logits(seed=1)
    assert torch.allclose(skew_forward_kl(t, s, alpha=0.0), forward_kl(t, s), atol=1e-5)
    assert torch.allclose(skew_reverse_kl(t, s, alpha=0.0), reverse_kl(t, s), atol=1e-5)


def test_band_predictor_bounds_hold_for_any_weights():
    band = BandPredictor(top_k=8)
    torch.nn.init.normal_(band.net[2].weight, std=10.0)
    probs = torch.softmax(torch.randn(100, 8) * 5, -1).sort(-1, descending=True).values
    lower, upper = band(probs)
    assert ((0 < lower) & (lower < upper) & (upper < 1)).all()


def test_band_predictor_keeps_a_gradient_where_a_hard_clamp_had_none():
    band = BandPredictor(top_k=8)
    with torch.no_grad():
        band.net[2].bias.fill_(30.0)  # far beyond the old hard clamp at +-8
    probs = torch.softmax(torch.randn(4, 8), -1).sort(-1, descending=True).values
    lower, upper = band(probs)
    (lower.sum() + upper.sum()).backward()
    assert band.net[2].bias.grad.abs().min() > 0
    assert ((0 < lower) & (lower < upper) & (upper < 1)).all()


def test_dac_kl_zero_on_identical_and_matches_a_hand_computed_hard_band():
    band = BandPredictor(top_k=4, init_lower=0.05, init_upper=0.8)
    t = torch.log(torch.tensor([[0.5, 0.25, 0.15, 0.06, 0.04]]))
    s = torch.log(torch.tensor([[0.2, 0.2, 0.2, 0.2, 0.2]]))
    target = torch.tensor([1])
    out = dac_kl(t, t, target, band, kappa=50.0)
    assert out.loss.abs().max() < 1e-6
    # Hard band (kappa huge): cumulative masses 0.5, 0.75, 0.9, 0.96; l = 0.05, u = 0.8 keeps sorted
    # entries 0 and 1; entry 1 is the target class, counted once as the target.
    out = dac_kl(t, s, target, band, kappa=1e4)
    t_vec = torch.tensor([0.25, 0.5]) / 0.75
    s_vec = torch.tensor([0.2, 0.2]) / 0.4
    expected = (t_vec * (t_vec / s_vec).log()).sum()
    assert torch.allclose(out.loss, expected.reshape(1), atol=1e-4)
    assert torch.allclose(out.lower, torch.tensor([0.05])) and torch.allclose(out.upper, torch.tensor([0.8]), atol=1e-5)
    # in the band: entry 0 (p 0.5) of the non-target mass 0.75
    assert out.mass.item() == pytest.approx(0.5, abs=1e-4) and out.coverage.item() == pytest.approx(0.5 / 0.75, abs=1e-4)
    # Unnormalised: the same two entries compared as they are, generalised KL sum t log(t/s) - t + s
    raw = dac_kl(t, s, target, band, kappa=1e4, normalised=False)
    t_raw, s_raw = torch.tensor([0.25, 0.5]), torch.tensor([0.2, 0.2])
    assert raw.loss.item() == pytest.approx(float((t_raw * (t_raw / s_raw).log() - t_raw + s_raw).sum()), abs=1e-4)
    assert dac_kl(t, t, target, band, kappa=50.0, normalised=False).loss.abs().max() < 1e-6


def test_unnormalised_band_vectors_do_not_vanish_with_the_band():
    """Normalised, an empty band leaves [1] vs [1]: exactly 0 whatever the student. Unnormalised it still
    compares the target class's probabilities."""
    band = BandPredictor(top_k=4, init_lower=0.97, init_upper=0.98)  # a band holding no entry
    t = torch.log(torch.tensor([[0.5, 0.25, 0.15, 0.06, 0.04]]))
    s = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.2, 0.2]]))
    target = torch.tensor([0])
    normalised = dac_kl(t, s, target, band, kappa=1e4)
    raw = dac_kl(t, s, target, band, kappa=1e4, normalised=False)
    assert normalised.loss.item() == pytest.approx(0.0, abs=1e-6) and normalised.mass.item() < 1e-3
    assert raw.loss.item() == pytest.approx(0.5 * math.log(0.5 / 0.1) - 0.5 + 0.1, abs=1e-3)


def test_dac_kl_gradients_reach_f_sub_and_the_student():
    band = BandPredictor(top_k=16)
    t, s = logits(seed=0), logits(seed=1).requires_grad_()
    loss = dac_kl(t, s, t.argmax(-1), band, kappa=20.0).loss
    loss.sum().backward()
    assert s.grad.abs().sum() > 0
    # The output layer starts at zero weights (one band for every token), so at first only it receives
    # gradient; after one step the gradient reaches every parameter of f_sub.
    assert band.net[2].weight.grad.abs().sum() > 0 and band.net[2].bias.grad.abs().sum() > 0
    torch.optim.SGD(band.parameters(), lr=1.0).step()
    band.zero_grad()
    dac_kl(t, s, t.argmax(-1), band, kappa=20.0).loss.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in band.parameters())


def test_span_correlation_only_on_marked_pairs():
    t, s = logits(seed=0), logits(seed=1)
    pairs = torch.tensor([True, False, False, True, False, False])
    assert span_correlation(t, t, pairs).abs().max() < 1e-7
    out = span_correlation(t, s, pairs)
    assert out.shape == (2,)
    p, q = t.softmax(-1), s.softmax(-1)
    assert torch.allclose(out[1], torch.linalg.vector_norm(p[3] * p[4] - q[3] * q[4]))
    assert span_correlation(t, s, torch.zeros(6, dtype=torch.bool)).numel() == 0


def _rows(n=23, h=8, v=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    s_h = torch.randn(n, h, generator=g)
    t_h = torch.randn(n, h, generator=g)
    s_w = torch.randn(v, h, generator=g)
    t_w = torch.randn(v, h, generator=g)
    labels = torch.randint(0, v, (n,), generator=g)
    pairs = torch.rand(n, generator=g) < 0.6
    pairs[-1] = False
    return s_h, s_w, t_h, t_w, labels, pairs


VARIANTS = [{"method": m} for m in METHODS] + [
    {"method": "mgsr", "band_vectors": "unnormalised", "dac_target": "label"},
    {"method": "mgsr", "token_loss": "forward_kl"},
    {"method": "mgsr", "band_objective": "joint"},
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(map(str, v.values())))
@pytest.mark.parametrize("chunk", [1, 4, 7])
def test_chunked_equals_full_logits_loss_and_gradients(variant, chunk):
    s_h, s_w, t_h, t_w, labels, pairs = _rows()
    sft_rows = torch.arange(labels.shape[0]) % 3 != 0  # some rows are no SFT target
    cfg = DistillConfig(top_k=16, kappa=20.0, kd_sft_weight=0.5, **variant)
    results = []
    for chunk_size in (None, chunk):
        objective = Objective(cfg)  # f_sub's init is seeded by the config: both runs get the same
        h, w = s_h.clone().requires_grad_(), s_w.clone().requires_grad_()
        loss, stats = distill_loss(h, w, t_h, t_w, labels, pairs, objective, chunk_size, sft_rows=sft_rows)
        loss.backward()
        grads = [h.grad, w.grad] + [p.grad for p in objective.parameters()]
        results.append((loss.detach(), stats, grads))
    (full, full_stats, full_grads), (chunked, chunk_stats, chunk_grads) = results
    assert torch.allclose(full, chunked, rtol=1e-5, atol=1e-6)
    for key, value in full_stats.items():
        assert chunk_stats[key] == pytest.approx(value, rel=1e-4, abs=1e-6)
    for a, b in zip(full_grads, chunk_grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    with torch.no_grad():  # the evaluation path (no gradients kept) agrees too
        objective = Objective(cfg)
        evaluated, _ = distill_loss(s_h, s_w, t_h, t_w, labels, pairs, objective, chunk, sft_rows=sft_rows)
    assert torch.allclose(evaluated, full, rtol=1e-5, atol=1e-6)


def test_mgsr_objective_reports_band_and_every_term():
    s_h, s_w, t_h, t_w, labels, pairs = _rows()
    objective = Objective(DistillConfig(method="mgsr", top_k=16))
    loss, stats = distill_loss(s_h, s_w, t_h, t_w, labels, pairs, objective, 5)
    assert {"loss_sft", "loss_dac", "loss_span", "loss_band", "band_lower", "band_upper", "band_width", "band_mass",
            "band_coverage"} <= set(stats)
    assert 0 < stats["band_lower"] < stats["band_upper"] < 1
    assert stats["band_width"] == pytest.approx(stats["band_upper"] - stats["band_lower"], rel=1e-5)
    expected = stats["loss_sft"] + stats["loss_dac"] + stats["loss_span"] + stats["loss_band"]
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)


def test_span_pairs_never_cross_the_end_of_a_response():
    from components.distill import collate, student_loss_fn
    from components.distill.data import Example
    from components.models.tiny import build_tiny_model
    from semflow.config import TinyModelConfig

    teacher, _ = build_tiny_model(TinyModelConfig(seed=1))
    student, _ = build_tiny_model(TinyModelConfig(seed=2))
    objective = Objective(DistillConfig(method="mgsr", top_k=16))
    loss_fn = student_loss_fn(student, teacher, objective, chunk_size=3)
    every = [Example([5, 6], [7, 8, 9], [True] * 3), Example([5], [10, 11, 12, 13], [True] * 4)]
    inside = [Example([5, 6], [7, 8, 9], [True, True, False]), Example([5], [10, 11, 12, 13], [True] * 3 + [False])]
    with torch.no_grad():
        _, flagged = loss_fn(collate(every, 0))
        _, clean = loss_fn(collate(inside, 0))
    assert flagged["loss_span"] == pytest.approx(clean["loss_span"], rel=1e-6)
