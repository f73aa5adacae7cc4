"""The training objective: one config switch over MGSR and its baselines, computed over token chunks.

`Objective` turns teacher and student logits of response tokens into the method's loss:

    mgsr      w_sft * L_SFT + w_dac * L_DAC + w_span * L_span    (Liu et al. 2024: L_SFT + L_DAC-KL + L_span;
              DAC-KL its Eq. 8, span correlation its Eq. 10)   [+ the band's coverage penalty, see below]
    sft       L_SFT on the dataset references
    seqkd     L_SFT on teacher responses (Kim & Rush 2016)
    kd_fkl    KL(p || q)            kd_rkl   KL(q || p)  (token level; MiniLLM optimises the sequence level)
    jsd       JSD_beta(p, q)        gkd      JSD_beta, partly on fresh student samples (Agarwal et al. 2024)
    skew_fkl  KL(p || a p + (1-a) q)         skew_rkl  KL(q || (1-a) p + a q)   (DistiLLM, Ko et al. 2024)
    (the divergence baselines add kd_sft_weight * L_SFT, 0 by default)

The SFT term only ever trains on supervision: rows flagged in `sft_rows` (their sequence is the teacher's
response or a reference), plus, in `student_loss_fn`, a separate student pass over the SFT targets of
rows whose training sequence the student sampled (`distill.sft_target`). MGSR's KD terms train on every
row. The ablations are switches: `token_loss: forward_kl` replaces DAC-KL, `w_span: 0` drops the span
term, `band_objective: frozen` keeps f_sub at its init, `scrg_schedule: none` trains on teacher responses.

How f_sub learns (`band_objective`), and why. The paper trains f_sub end to end through L_DAC (`joint`).
That has a degenerate optimum: an empty band makes the normalised L_DAC exactly 0 (both vectors become
[1, 0, ...]), so wherever the student is wrong inside the band, the gradient on f_sub points at shrinking
it; on the test problem of tests/components/test_distill_band.py (a student that cannot follow the
teacher) the share of the teacher's mass inside the band falls from 0.75 to 0.00 within 40 steps. `coverage` (the default) keeps the joint gradient, so f_sub still chooses *which* part
of the teacher's mass to drop (the part the student already matches costs nothing to keep, a noisy tail
the student cannot follow costs much), and adds

    L_band = band_coverage_weight * mean_tokens relu(band_coverage - c)^2

with c the share of the teacher's non-target mass inside the band. The floor makes the empty band
infeasible; the squared hinge is zero above it, so the band is free to move within the feasible set;
the penalty depends only on the teacher's distribution and f_sub, so it gives the student no gradient.
`frozen` is the fixed-band ablation (the clip the paper compares DAC-KL against). Freezing by accident is
avoided by the soft clamp of BandPredictor and a band learning rate (1e-2) that moves the bounds within
tens of steps; l, u, width, band mass and coverage are logged every step.

`distill_loss` computes the objective from final hidden states and the two LM heads. With `chunk_size`
set it never materialises [n, vocab] logits for more than one chunk of rows: a custom autograd function
computes each chunk's logits, loss and gradients (with respect to the student's hidden rows, its head
and f_sub) inside the forward pass, keeps only those gradients, and hands them back in backward. That
is the fused-linear-loss idea of Liger-Kernel, written for losses that Liger does not provide (DAC-KL,
span correlation). Without `chunk_size` it computes full logits (the naive reference).

Example::

    objective = Objective(DistillConfig(method="mgsr"))
    loss, stats = distill_loss(s_hidden, student.lm_head.weight, t_hidden, teacher.lm_head.weight,
                               labels, pair_start, objective, chunk_size=1024)
    loss.backward()
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from components.distill.losses import (
    DIVERGENCES,
    IGNORE,
    BandPredictor,
    dac_kl,
    forward_kl,
    sft_loss,
    span_correlation,
)
from components.rng import isolated
from semflow.config import DistillConfig

SFT_ONLY = {"sft", "seqkd"}


class Objective(nn.Module):
    """The method's loss terms; holds f_sub (DAC-KL's band predictor) for `mgsr`, so that its
    parameters train with the student's (pass `objective.parameters()` to the optimizer)."""

    def __init__(self, cfg: DistillConfig):
        super().__init__()
        self.cfg = cfg
        self.band = None
        if cfg.method == "mgsr" and cfg.token_loss == "dac_kl":
            # f_sub's init depends on the config alone, whatever other stages draw meanwhile (components.rng)
            with isolated(cfg.train.seed):
                self.band = BandPredictor(cfg.top_k, cfg.band_hidden)
            if cfg.band_objective == "frozen":
                self.band.requires_grad_(False)

    @property
    def needs_teacher(self) -> bool:
        return self.cfg.method not in SFT_ONLY

    @property
    def sft_weight(self) -> float:
        """The weight of L_SFT in this method's loss."""
        if self.cfg.method in SFT_ONLY:
            return 1.0
        return self.cfg.w_sft if self.cfg.method == "mgsr" else self.cfg.kd_sft_weight

    def terms(
        self,
        t_logits: torch.Tensor | None,
        s_logits: torch.Tensor,
        labels: torch.Tensor,
        pair_start: torch.Tensor,
        counts: tuple[int, int, int],
        sft_rows: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss over these rows, normalised by the global counts so that chunk losses add up.

        labels [n] (IGNORE on rows that only serve as the right neighbour of a span pair),
        pair_start [n] bool, sft_rows [n] bool (rows whose label is a supervision target; None: all),
        counts = (label tokens, span pairs, SFT divisor) over the whole batch. Returns (loss, stats):
        detached 0-dim tensors, already divided by the global counts, that add up over chunks.
        """
        # Rows are weighted by a 0/1 mask rather than selected: boolean indexing would copy the [n, V]
        # logits and wait for the GPU (nonzero) several times per chunk.
        cfg = self.cfg
        n_tokens, n_pairs, n_sft = counts
        rows = (labels != IGNORE).float()
        sft_mask = rows if sft_rows is None else rows * sft_rows.float()
        stats: dict[str, torch.Tensor] = {}
        sft = (sft_loss(s_logits, labels) * sft_mask).sum() / max(n_sft, 1)
        stats["loss_sft"] = sft.detach()
        if cfg.method in SFT_ONLY:
            return sft, stats
        assert t_logits is not None
        if cfg.method != "mgsr":
            div = DIVERGENCES[cfg.method]
            kwargs = {"beta": cfg.jsd_beta} if cfg.method in ("jsd", "gkd") else {}
            if cfg.method.startswith("skew"):
                kwargs = {"alpha": cfg.skew_alpha}
            kd = (div(t_logits, s_logits, tau=cfg.tau, **kwargs) * rows).sum() / n_tokens
            stats[f"loss_{cfg.method}"] = kd.detach()
            return kd + cfg.kd_sft_weight * sft, stats

        span = span_correlation(t_logits, s_logits, pair_start, cfg.tau).sum() / max(n_pairs, 1)
        stats["loss_span"] = span.detach()
        if cfg.token_loss == "forward_kl":
            token = (forward_kl(t_logits, s_logits, cfg.tau) * rows).sum() / n_tokens
            stats["loss_fkl"] = token.detach()
            return cfg.w_sft * sft + cfg.w_dac * token + cfg.w_span * span, stats

        target = labels.clamp_min(0) if cfg.dac_target == "label" else t_logits.argmax(-1)
        out = dac_kl(t_logits, s_logits, target, self.band, cfg.kappa, cfg.tau,
                     normalised=cfg.band_vectors == "normalised")
        dac = (out.loss * rows).sum() / n_tokens
        loss = cfg.w_sft * sft + cfg.w_dac * dac + cfg.w_span * span
        mean = lambda x: (x.detach() * rows).sum() / n_tokens
        stats.update(loss_dac=dac.detach(), band_lower=mean(out.lower), band_upper=mean(out.upper),
                     band_width=mean(out.upper - out.lower), band_mass=mean(out.mass),
                     band_coverage=mean(out.coverage))
        if cfg.band_objective == "coverage":
            shortfall = torch.relu(cfg.band_coverage - out.coverage)
            band = cfg.band_coverage_weight * (shortfall.square() * rows).sum() / n_tokens
            stats["loss_band"] = band.detach()
            loss = loss + band
        return loss, stats


def _floats(stats: dict[str, torch.Tensor]) -> dict[str, float]:
    """Tensor stats to floats with one device synchronisation."""
    if not stats:
        return {}
    return dict(zip(stats, torch.stack([v.float() for v in stats.values()]).tolist(), strict=True))


def _logits(hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return hidden.to(weight.dtype) @ weight.T


def distill_loss(
    s_hidden: torch.Tensor,
    s_weight: torch.Tensor,
    t_hidden: torch.Tensor | None,
    t_weight: torch.Tensor | None,
    labels: torch.Tensor,
    pair_start: torch.Tensor,
    objective: Objective,
    chunk_size: int | None = None,
    sft_rows: torch.Tensor | None = None,
    n_sft: int | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The objective over n response rows: s_hidden/t_hidden [n, H] final hidden states (the rows that
    predict `labels` [n]), s_weight/t_weight [V, H] the LM heads, pair_start [n] bool (row i and i+1
    are adjacent tokens of one span), sft_rows [n] bool (rows whose label is a supervision target; None:
    every row), n_sft what the SFT sum is divided by (default: the label tokens, as every other term, so
    that chunks, micro-batches and data-parallel ranks weighted by label tokens add up exactly; a caller
    adding a separate SFT pass passes its main batch's count to both calls). Returns (loss, stats)."""
    n_tokens = max(int((labels != IGNORE).sum()), 1)
    n_pairs = int(pair_start.sum())
    if sft_rows is None:
        sft_rows = torch.ones_like(labels, dtype=torch.bool)
    if n_sft is None:  # per label token, as every other term, so chunks, micro-batches and ranks add up
        n_sft = n_tokens
    counts = (n_tokens, n_pairs, n_sft)
    if not objective.needs_teacher:
        t_hidden = t_weight = None
    if not chunk_size or chunk_size >= s_hidden.shape[0]:
        with torch.no_grad():
            t_logits = _logits(t_hidden, t_weight) if t_hidden is not None else None
        loss, stats = objective.terms(t_logits, _logits(s_hidden, s_weight), labels, pair_start, counts, sft_rows)
        return loss, _floats(stats)
    stats: dict[str, torch.Tensor] = defaultdict(float)
    if not torch.is_grad_enabled():  # evaluation: the same chunks, no gradients to keep
        total = s_hidden.new_zeros((), dtype=torch.float32)
        for a in range(0, s_hidden.shape[0], chunk_size):
            loss, chunk_stats = _chunk_terms(s_hidden, s_weight, t_hidden, t_weight, labels, pair_start, sft_rows,
                                             objective, a, chunk_size, counts)
            total += loss.float()
            for k, v in chunk_stats.items():
                stats[k] += v
        return total, _floats(stats)
    params = [p for p in objective.parameters() if p.requires_grad]
    loss = _ChunkedLoss.apply(
        s_hidden, s_weight, t_hidden, t_weight, labels, pair_start, sft_rows, objective, chunk_size,
        counts, stats, *params,
    )
    return loss, _floats(stats)


def _chunk_terms(s_hidden, s_weight, t_hidden, t_weight, labels, pair_start, sft_rows, objective, a, chunk_size,
                 counts, offset=0):
    """The objective on rows [a, a + chunk_size) plus one extra row, the right neighbour of a span
    pair that starts on the chunk's last row. `s_hidden` holds rows from `offset` on."""
    n = labels.shape[0]
    b, e = min(a + chunk_size, n), min(a + chunk_size + 1, n)
    chunk_labels = labels[a:e].clone()
    chunk_labels[b - a :] = IGNORE
    chunk_pairs = pair_start[a:e].clone()
    chunk_pairs[b - a :] = False  # a pair starting on the extra row belongs to the next chunk
    with torch.no_grad():
        t_logits = _logits(t_hidden[a:e], t_weight) if t_hidden is not None else None
    s_logits = _logits(s_hidden[a - offset : e - offset], s_weight)
    return objective.terms(t_logits, s_logits, chunk_labels, chunk_pairs, counts, sft_rows[a:e])


class _ChunkedLoss(torch.autograd.Function):
    """Forward computes per-chunk loss and gradients; backward scales the stored gradients."""

    @staticmethod
    def forward(ctx, s_hidden, s_weight, t_hidden, t_weight, labels, pair_start, sft_rows, objective, chunk_size,
                counts, stats, *params):
        n = s_hidden.shape[0]
        grad_hidden = torch.zeros_like(s_hidden)
        grad_weight = torch.zeros_like(s_weight) if s_weight.requires_grad else None
        grad_params = [torch.zeros_like(p) for p in params]
        total = torch.zeros((), dtype=torch.float32, device=s_hidden.device)
        for a in range(0, n, chunk_size):
            e = min(a + chunk_size + 1, n)
            with torch.enable_grad():
                h = s_hidden[a:e].detach().requires_grad_(True)
                w = s_weight.detach().requires_grad_(s_weight.requires_grad)
                loss, chunk_stats = _chunk_terms(h, w, t_hidden, t_weight, labels, pair_start, sft_rows,
                                                 objective, a, chunk_size, counts, offset=a)
                wrt = [h] + ([w] if grad_weight is not None else []) + list(params)
                grads = torch.autograd.grad(loss, wrt, allow_unused=True)
            grad_hidden[a:e] += grads[0]
            rest = grads[1:]
            if grad_weight is not None:
                grad_weight += rest[0]
                rest = rest[1:]
            for acc, g in zip(grad_params, rest, strict=True):
                if g is not None:
                    acc += g
            total += loss.detach().float()
            for k, v in chunk_stats.items():
                stats[k] += v
            del loss, grads  # free this chunk's logits before the next one
        ctx.save_for_backward(grad_hidden, *( [grad_weight] if grad_weight is not None else []), *grad_params)
        ctx.has_weight_grad = grad_weight is not None
        return total

    @staticmethod
    def backward(ctx, grad_out):
        saved = list(ctx.saved_tensors)
        grad_hidden = saved.pop(0) * grad_out
        grad_weight = saved.pop(0) * grad_out if ctx.has_weight_grad else None
        grad_params = [g * grad_out for g in saved]
        return (grad_hidden, grad_weight, None, None, None, None, None, None, None, None, None, *grad_params)


def student_loss_fn(student, teacher, objective: Objective, chunk_size: int | None):
    """loss_fn(batch) for the Trainer: final hidden states of both models on the batch, gathered at
    the rows that predict a response token, then `distill_loss` over those rows.

    The SFT term covers the rows `batch["sft_row"]` marks (their sequence is a supervision target) and,
    when the batch carries `sft_input_ids` (collate builds them for rows whose sequence the student
    sampled but whose prompt has a target), one more student pass over those targets: SFT only. Both
    SFT sums are divided by the batch's label tokens, like every other term."""
    s_head = student.get_output_embeddings()
    t_head = teacher.get_output_embeddings() if teacher is not None else None
    for name, head in (("student", s_head), ("teacher", t_head)):
        if head is not None and getattr(head, "bias", None) is not None:
            raise NotImplementedError(f"the {name}'s LM head has a bias; distill_loss assumes none")
    if objective.needs_teacher and teacher is None:
        raise ValueError(f"method {objective.cfg.method!r} needs a teacher")
    sft_only = Objective(objective.cfg.model_copy(update={"method": "sft"}))

    def hidden_rows(model, ids, mask, rows):
        return model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1][rows]

    def loss_fn(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        labels = batch["labels"][:, 1:]
        rows = labels != IGNORE  # hidden state at t predicts token t + 1
        s_rows = hidden_rows(student, ids, mask, rows)
        t_rows = None
        if objective.needs_teacher:
            with torch.no_grad():
                t_rows = hidden_rows(teacher, ids, mask, rows)
        # A pair must end on the next response token of the same sequence: rows are gathered in
        # order, so the next gathered row is that token exactly when position t + 1 is a label too.
        pairs = batch["pair_start"][:, 1:] & torch.cat([rows[:, 1:], torch.zeros_like(rows[:, :1])], dim=1)
        sft_row = batch.get("sft_row")
        sft_rows = (sft_row[:, None].expand_as(rows) if sft_row is not None else torch.ones_like(rows))[rows]
        n_sft = max(int(rows.sum()), 1)  # the SFT sums of both passes are per label token of this batch
        extra = "sft_input_ids" in batch and objective.sft_weight > 0
        loss, stats = distill_loss(
            s_rows, s_head.weight, t_rows, t_head.weight if t_head is not None else None,
            labels[rows], pairs[rows], objective, chunk_size, sft_rows=sft_rows, n_sft=n_sft,
        )
        if extra:
            x_labels = batch["sft_labels"][:, 1:]
            x_rows = x_labels != IGNORE
            x_hidden = hidden_rows(student, batch["sft_input_ids"], batch["sft_attention_mask"], x_rows)
            x_loss, x_stats = distill_loss(x_hidden, s_head.weight, None, None, x_labels[x_rows],
                                           torch.zeros_like(x_labels[x_rows], dtype=torch.bool), sft_only,
                                           chunk_size, n_sft=n_sft)
            loss = loss + objective.sft_weight * x_loss
            stats["loss_sft"] = stats.get("loss_sft", 0.0) + x_stats["loss_sft"]
        return loss, stats

    return loss_fn
