"""Token- and span-level distillation losses, one pure function each, over [n, vocab] logit rows.

Every function takes teacher and student logits of the same response tokens (one row per token,
already gathered from the [batch, seq] layout) and returns a per-row loss, so that a caller can sum
over chunks of rows and divide by the global count: chunked and unchunked results agree exactly (see
`components.distill.objective`, which never builds full fp32 [batch, seq, vocab] logits).

Example::

    >>> t, s = torch.randn(4, 10), torch.randn(4, 10)
    >>> forward_kl(t, s).shape
    torch.Size([4])
    >>> float(forward_kl(t, t).abs().max()) < 1e-6
    True

Notation: p = softmax(teacher / tau), q = softmax(student / tau), rows are tokens.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -100


def sft_loss(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy -log q(y_i): L_SFT, the supervised term of MGSR's overall objective
    L = L_SFT + L_DAC-KL + L_span (Liu et al. 2024), and the whole loss of the sft and seqkd baselines."""
    return F.cross_entropy(student_logits.float(), labels, reduction="none", ignore_index=IGNORE)


def forward_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """KL(p || q) = sum_v p log(p / q): word-level KD (Hinton et al. 2015; Kim & Rush 2016), mass-covering."""
    t = F.log_softmax(teacher_logits.float() / tau, dim=-1)
    s = F.log_softmax(student_logits.float() / tau, dim=-1)
    return (t.exp() * (t - s)).sum(-1)


def reverse_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """KL(q || p), mode-seeking, per token. MiniLLM (Gu et al., ICLR 2024) minimises the *sequence-level*
    reverse KL with policy-gradient updates on student samples; this is the token-level reverse KL that
    its and DistiLLM's comparisons use as a baseline, not MiniLLM's optimiser."""
    return forward_kl(student_logits, teacher_logits, tau)


def jsd(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, beta: float = 0.5, tau: float = 1.0
) -> torch.Tensor:
    """Generalised JSD of GKD (Agarwal et al., ICLR 2024, "On-Policy Distillation of Language Models"),
    with m = beta p + (1 - beta) q:

    JSD_beta = beta KL(p || m) + (1 - beta) KL(q || m). GKD notes that its gradients behave like forward
    KL for beta near 0 and like reverse KL for beta near 1; 0 and 1 themselves are rejected here (the
    divergence is identically 0 there).
    """
    if not 0.0 < beta < 1.0:
        raise ValueError(f"jsd beta must lie strictly between 0 and 1, got {beta}")
    t = F.log_softmax(teacher_logits.float() / tau, dim=-1)
    s = F.log_softmax(student_logits.float() / tau, dim=-1)
    # log m by logsumexp keeps the mixture exact where either probability underflows.
    m = torch.logsumexp(torch.stack([t + torch.log(torch.tensor(beta)), s + torch.log(torch.tensor(1 - beta))]), 0)
    return beta * (t.exp() * (t - m)).sum(-1) + (1 - beta) * (s.exp() * (s - m)).sum(-1)


def skew_forward_kl(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, alpha: float = 0.1, tau: float = 1.0
) -> torch.Tensor:
    """alpha-skew KL of DistiLLM (Ko et al., ICML 2024, Sec. 3.1): KL(p || alpha p + (1 - alpha) q).

    The teacher mass mixed into the student side bounds the loss where q underflows.
    """
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"skew alpha must lie in [0, 1), got {alpha}")
    t = F.log_softmax(teacher_logits.float() / tau, dim=-1)
    s = F.log_softmax(student_logits.float() / tau, dim=-1)
    mix = torch.logaddexp(t + torch.log(torch.tensor(alpha)), s + torch.log(torch.tensor(1 - alpha)))
    return (t.exp() * (t - mix)).sum(-1)


def skew_reverse_kl(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, alpha: float = 0.1, tau: float = 1.0
) -> torch.Tensor:
    """alpha-skew reverse KL of DistiLLM (Ko et al., ICML 2024, Sec. 3.1): KL(q || (1 - alpha) p + alpha q)."""
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"skew alpha must lie in [0, 1), got {alpha}")
    t = F.log_softmax(teacher_logits.float() / tau, dim=-1)
    s = F.log_softmax(student_logits.float() / tau, dim=-1)
    mix = torch.logaddexp(t + torch.log(torch.tensor(1 - alpha)), s + torch.log(torch.tensor(alpha)))
    return (s.exp() * (s - mix)).sum(-1)


class BandPredictor(nn.Module):
    """f_sub of DAC-KL (Liu et al. 2024, Eq. 6): an MLP from the sorted top-K teacher probabilities to the
    band's bounds 0 < l < u < 1, quantiles of the teacher's cumulative mass.

    Parametrised as l = m + (1 - 2m) sigmoid(a), u = l + (1 - m - l) sigmoid(b) with m = 1e-3, where
    (a, b) = 8 tanh(net(x) / 8): a soft clamp to (-8, 8), so m < l < u < 1 - m holds for any weights in
    fp32 (an unclamped sigmoid rounds to exactly 1) while the gradient never becomes exactly zero (a hard
    clamp would stop f_sub for good once an output crossed it). The paper gives no architecture; ours
    is Linear(K, hidden) - GELU - Linear(hidden, 2). The last layer starts at zero weights with biases
    giving l = init_lower and u = init_upper, so training starts from one band for every token.
    """

    MARGIN = 1e-3
    SOFT_CLAMP = 8.0

    def __init__(self, top_k: int, hidden: int = 64, init_lower: float = 0.05, init_upper: float = 0.95):
        super().__init__()
        if not 0.01 <= init_lower < init_upper <= 0.99:
            raise ValueError(f"need 0.01 <= init_lower < init_upper <= 0.99, got {init_lower}, {init_upper}")
        self.top_k = top_k
        self.net = nn.Sequential(nn.Linear(top_k, hidden), nn.GELU(), nn.Linear(hidden, 2))
        nn.init.zeros_(self.net[2].weight)
        m, c = self.MARGIN, self.SOFT_CLAMP
        raw = torch.tensor([_logit((init_lower - m) / (1 - 2 * m)), _logit((init_upper - init_lower) / (1 - m - init_lower))])
        with torch.no_grad():
            self.net[2].bias.copy_(c * torch.atanh(raw / c))

    def forward(self, sorted_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sorted_probs [n, K] descending -> (l [n], u [n])."""
        c = self.SOFT_CLAMP
        a, b = (c * torch.tanh(self.net(sorted_probs.to(self.net[0].weight.dtype)).float() / c)).unbind(-1)
        m = self.MARGIN
        lower = m + (1 - 2 * m) * torch.sigmoid(a)
        return lower, lower + (1 - m - lower) * torch.sigmoid(b)


def _logit(x: float) -> float:
    return float(torch.log(torch.tensor(x / (1.0 - x))))


class DacOutput(NamedTuple):
    loss: torch.Tensor  # [n] L_DAC per token
    lower: torch.Tensor  # [n] l
    upper: torch.Tensor  # [n] u
    mass: torch.Tensor  # [n] teacher mass inside the band (target class excluded)
    coverage: torch.Tensor  # [n] that mass as a share of the teacher's non-target mass


def dac_kl(
    teacher_logits: torch.Tensor,
    student_logits: torch.Tensor,
    target: torch.Tensor,
    band: BandPredictor,
    kappa: float = 50.0,
    tau: float = 1.0,
    normalised: bool = True,
) -> DacOutput:
    """Distribution Adaptive Clipping KL of MGSR (Liu et al. 2024, Eq. 8; f_sub is its Eq. 6), per token.

    1. p = softmax(teacher / tau); only the top K = band.top_k entries are sorted (torch.topk). A full
       sort of a 49k-entry row per token costs O(V log V) and a [n, V] index tensor; the band lies in
       the head of the distribution, and the mass beyond the top K (a few percent for K = 256 on a
       trained LM) is treated as outside the band.
    2. f_sub(sorted top-K probabilities) -> bounds 0 < l < u < 1.
    3. Soft band mask over sorted entries by their cumulative mass c_k (mass up to and including entry
       k): m_k = sigmoid(kappa (c_k - l)) * sigmoid(kappa (u - c_k)); the leading entry (c_0 = p_max)
       enters when p_max > l. Gradients reach f_sub through m.
    4. Teacher vector [p_y, m * p_sorted] with y the target class (the teacher's argmax, or the
       sequence's token: `distill.dac_target`); an occurrence of y inside the band is masked out so y
       is counted once. The student vector takes q at the same vocabulary positions with the same
       weights: [q_y, m * q_sorted].
    5. `normalised` (the paper's form): both vectors are renormalised to sum to 1 and
       L_DAC = KL(teacher vector || student vector). Unnormalised: the two sub-distributions are compared
       as they are with the generalised KL sum_i t_i log(t_i / s_i) - t_i + s_i, which is >= 0 and 0 only
       where they agree (without the - t + s terms a sub-distribution KL can go negative).

    Why the band can collapse, and what stops it (see `band_objective` in components.distill.objective):
    normalised, as the mask goes to 0 both vectors become [1, 0, ...] and L_DAC is exactly 0, so if
    f_sub learns only from L_DAC (the paper's joint training) an empty band is its optimum and the
    gradient leads there whenever the student is wrong inside the band. Unnormalised, L_DAC still shrinks
    with the band (every band entry adds a term >= 0). The returned `coverage` (share of the non-target
    teacher mass inside the band) is what the objective's coverage penalty keeps above a floor.

    Returns a DacOutput (loss, l, u, band mass, coverage), each [n].
    """
    p = F.softmax(teacher_logits.float() / tau, dim=-1)
    log_q = F.log_softmax(student_logits.float() / tau, dim=-1)
    top_p, top_idx = p.topk(min(band.top_k, p.shape[-1]), dim=-1)  # [n, K], sorted descending
    if top_p.shape[-1] < band.top_k:  # vocabularies smaller than K (tiny test models): zero-pad
        top_p = F.pad(top_p, (0, band.top_k - top_p.shape[-1]))
        top_idx = F.pad(top_idx, (0, band.top_k - top_idx.shape[-1]))
    lower, upper = band(top_p)
    cum = top_p.cumsum(-1)
    mask = torch.sigmoid(kappa * (cum - lower[:, None])) * torch.sigmoid(kappa * (upper[:, None] - cum))
    mask = mask * (top_idx != target[:, None]) * (top_p > 0)

    eps = 1e-12
    p_y = p.gather(-1, target[:, None])
    t_vec = torch.cat([p_y, mask * top_p], dim=-1)  # [n, 1 + K]
    log_q_band = log_q.gather(-1, top_idx)
    s_vec = torch.cat([log_q.gather(-1, target[:, None]).exp(), mask * log_q_band.exp()], dim=-1)
    if normalised:
        t_vec = t_vec / t_vec.sum(-1, keepdim=True).clamp_min(eps)
        s_vec = s_vec / s_vec.sum(-1, keepdim=True).clamp_min(eps)
        loss = (t_vec * (torch.log(t_vec.clamp_min(eps)) - torch.log(s_vec.clamp_min(eps)))).sum(-1)
    else:
        loss = (t_vec * (torch.log(t_vec.clamp_min(eps)) - torch.log(s_vec.clamp_min(eps))) - t_vec + s_vec).sum(-1)
    mass = (mask * top_p).sum(-1)
    coverage = mass / (1.0 - p_y.squeeze(-1)).clamp_min(1e-6)
    return DacOutput(loss, lower, upper, mass, coverage.clamp(max=1.0))


def span_correlation(
    teacher_logits: torch.Tensor,
    student_logits: torch.Tensor,
    pair_start: torch.Tensor,
    tau: float = 1.0,
) -> torch.Tensor:
    """Span-level correlation consistency loss of MGSR (Liu et al. 2024, Eq. 10), per token pair.

    For adjacent tokens i, i+1 inside one phrase span, r_i = p_i * p_{i+1} elementwise over the full
    vocabulary (the joint of the two token distributions under independence); the loss of the pair is
    ||r^t_i - r^s_i||_2. `pair_start` [n] bool marks rows i whose row i+1 is the next token of the
    same span; the returned tensor has one entry per marked row, in order.
    """
    rows = pair_start.nonzero().squeeze(-1)
    rows = rows[rows + 1 < pair_start.shape[0]]  # a pair needs its right neighbour among the rows
    if rows.numel() == 0:
        return teacher_logits.new_zeros(0, dtype=torch.float32)
    p = F.softmax(teacher_logits.float() / tau, dim=-1)
    q = F.softmax(student_logits.float() / tau, dim=-1)
    r_t = p[rows] * p[rows + 1]
    r_s = q[rows] * q[rows + 1]
    return torch.linalg.vector_norm(r_t - r_s, dim=-1)


DIVERGENCES = {
    "kd_fkl": forward_kl,
    "kd_rkl": reverse_kl,
    "jsd": jsd,
    "gkd": jsd,
    "skew_fkl": skew_forward_kl,
    "skew_rkl": skew_reverse_kl,
}
