"""`cade`: compass-aligned embeddings of the corpora and of the generated text (components/cade).

These fields are the one source of CADE's defaults: components.cade.settings.CadeSettings takes its
training defaults (and its validation) from them, and the shift tables, the CLI and the self-check take
theirs from here too. docs/cade.md explains each choice with the numbers of bench/bench_cade_shift.py.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from semflow.config.base import Section

GENERATED_SLICES = ("references", "teacher", "student_before", "student_after")

# The one min-count rule: a word enters a shift table, a neighbour list or the self-check only if it
# occurs at least this often in *each* slice compared. Below it a word's vector is mostly sampling noise
# (the planted-shift benchmark, bench/results/cade.md, plants and compares words of count >= 20 per
# half). The compass's own `min_count` is a different thing (which words get a vector at all, CADE's
# parameter).
DEFAULT_MIN_COUNT = 20

SHIFT_MEASURES = ("context", "split_half", "cosine")

# Fields of CadeConfig that are training settings (components.cade.settings.CadeSettings).
TRAINING_FIELDS = ("sg", "vector_size", "window", "negative", "min_count", "sample", "alpha", "min_alpha",
                   "compass_epochs", "slice_epochs", "epoch_words", "max_epochs", "init", "seed", "workers",
                   "ns_exponent", "batch_words", "replicates", "null_replicates")


class CadeConfig(Section):
    """Compass-aligned embeddings over corpora slices (training defaults as CADE/TWEC, except the compass's
    epochs, the epoch scaling and the split-half replicates); see components/cade and docs/cade.md."""

    slices: list[str] | None = Field(
        None,
        description="slice names: data.corpora names and/or generated ones (references, teacher, "
        "student_before, student_after); None: every corpus plus every generated slice",
    )
    # ---- training (CADE's Word2Vec arguments)
    sg: Literal[0, 1] = Field(0, description="0: CBOW, 1: skip-gram")
    vector_size: int = Field(100, gt=0, description="embedding dimensions")
    window: int = Field(5, gt=0, description="context window (words each side)")
    negative: int = Field(10, gt=0, description="negative samples per prediction (CADE freezes this matrix)")
    min_count: int = Field(5, gt=0, description="compass vocabulary: words seen this often over all slices get "
                           "a vector (CADE's min_count; shift tables use shift_min_count)")
    sample: float = Field(1e-3, ge=0, lt=1, description="frequent-word downsampling threshold (0: off)")
    alpha: float = Field(0.025, gt=0, le=1, description="initial learning rate")
    min_alpha: float = Field(1e-4, ge=0, description="final learning rate (linear decay)")
    compass_epochs: int = Field(20, gt=0, description="least passes of the compass over all slices (CADE: 5; "
                                "epoch_words usually asks for more on small slices)")
    slice_epochs: int = Field(5, gt=0, description="least passes of each slice model over its slice")
    epoch_words: int = Field(
        2_000_000, ge=0,
        description="epochs scaled to text size: each model trains on at least this many words "
        "(epochs = max(compass_/slice_epochs, ceil(epoch_words / tokens)), at most max_epochs); "
        "0: fixed epochs as in CADE. Small slices need it: 5 epochs leave their vectors near the start",
    )
    max_epochs: int = Field(100, gt=0, description="cap of the scaled epochs (a 1,000-token slice would "
                            "otherwise pass 2,000 times)")
    init: Literal["hidden", "compass"] = Field("hidden", description="slice word vectors: random or the compass's")
    seed: int = Field(0, ge=0, description="training seed")
    workers: int = Field(2, gt=0, description="training threads")
    ns_exponent: float = Field(0.75, ge=0, le=1, description="negative-sampling distribution: count ** ns_exponent")
    batch_words: int = Field(10000, ge=100, description="words per training job (gensim's batch_words)")
    replicates: int = Field(
        0, ge=0,
        description="split-half replicates per slice, for the split_half measure only (the default context "
        "measure needs none): each splits the slice's texts into two random halves and trains both against "
        "the compass; split_half needs >= 1 (4 were its default). Cost: each replicate costs about one more "
        "training of every slice",
    )
    null_replicates: int = Field(
        0, ge=0,
        description="quarter replicates per slice, the split_half measure's significance null: each cuts the "
        "slice's texts into four random quarters; two quarters against the other two are what split_half gives "
        "when nothing changed (docs/cade.md; 2 were its default). 0: an empirical null of the compared words "
        "instead (Efron 2004), which bench/results/cade.md found too liberal. Cost: about one more training of "
        "every slice each",
    )
    # ---- analysis
    heldout: float = Field(0.1, ge=0, lt=1, description="share of each slice's texts held out for likelihood")
    shift_measure: Literal["context", "split_half", "cosine"] = Field(
        "context",
        description="how shift tables rank words: context (a permutation test over the slices' texts of the "
        "word's mean context in the frozen compass matrix, its linearised CADE vector; docs/cade.md), "
        "split_half (its distance across the slices over its distance between halves of one slice; needs "
        "replicates) or cosine (1 - the cosine of its two aligned vectors, CADE's own measure)",
    )
    context_layout: Literal["sides", "window"] = Field(
        "sides", description="context measure: the left and right windows as two halves of an occurrence's "
        "context (sides) or one window mean (window, the plain linearised CADE vector)",
    )
    context_permutations: int = Field(
        1000, ge=10, le=100_000,
        description="context measure: random relabellings of the texts per word (its null's moments; a word in "
        "few texts gets every relabelling instead and an exact p)",
    )
    shift_min_count: int = Field(DEFAULT_MIN_COUNT, gt=0,
                                 description="shift tables, neighbour lists and the self-check: only words "
                                 "this frequent in each slice compared (the one min-count rule)")
    shift_fdr: float = Field(0.05, gt=0, lt=1, description="a shift is significant when its q-value "
                             "(Benjamini-Hochberg false discovery rate) is below this")
    top: int = Field(20, gt=0, description="most shifted words listed per slice pair")
    exclude_stopwords: bool = Field(
        True, description="leave gensim's English stopwords out of shift tables (they shift with genre)"
    )
    plot_words: int = Field(4, ge=0, description="words whose neighbours are plotted per pair")
    self_check: bool = Field(
        True, description="plant word swaps into the focus pair's slices (teacher vs student_after, news vs "
        "encyclopedia, else the first two) and report how many the shift table finds (MLflow metric "
        "self_check_recall.<a>~<b>; a warning when low)",
    )
    self_check_pairs: int = Field(4, gt=0, description="word pairs swapped by the self-check (2 x this many "
                                  "planted words)")

    @model_validator(mode="after")
    def _alpha_decays(self) -> CadeConfig:
        if self.min_alpha > self.alpha:
            raise ValueError(f"min_alpha ({self.min_alpha}) must not exceed alpha ({self.alpha})")
        if self.shift_measure == "split_half" and self.replicates < 1:
            raise ValueError("shift_measure split_half needs split-half replicates: set replicates (e.g. 4, and "
                             "null_replicates: 2 for its significance), or use the context measure")
        return self
