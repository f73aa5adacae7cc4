"""`cade`: compass-aligned embeddings of the corpora and of the generated text (components/cade)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from semflow.config.base import Section

GENERATED_SLICES = ("references", "teacher", "student_before", "student_after")


class CadeConfig(Section):
    """Compass-aligned embeddings over corpora slices (defaults as CADE/TWEC); see components/cade."""

    slices: list[str] | None = Field(
        None,
        description="slice names: data.corpora names and/or generated ones (references, teacher, "
        "student_before, student_after); None: every corpus plus every generated slice",
    )
    sg: Literal[0, 1] = Field(0, description="0: CBOW, 1: skip-gram")
    vector_size: int = Field(100, gt=0, description="embedding dimensions")
    window: int = Field(5, gt=0, description="context window (words each side)")
    negative: int = Field(10, gt=0, description="negative samples per prediction")
    min_count: int = Field(5, gt=0, description="compass vocabulary: count over all slices")
    sample: float = Field(1e-3, ge=0, lt=1, description="frequent-word downsampling threshold (0: off)")
    alpha: float = Field(0.025, gt=0, le=1, description="initial learning rate")
    min_alpha: float = Field(1e-4, ge=0, description="final learning rate (linear decay)")
    compass_epochs: int = Field(5, gt=0, description="passes of the compass over all slices")
    slice_epochs: int = Field(5, gt=0, description="passes of each slice model over its slice")
    init: Literal["hidden", "compass"] = Field("hidden", description="slice word vectors: random or the compass's")
    seed: int = Field(0, ge=0, description="training seed")
    workers: int = Field(2, gt=0, description="training threads")
    heldout: float = Field(0.1, ge=0, lt=1, description="share of each slice's sentences held out for likelihood")
    shift_min_count: int = Field(5, gt=0, description="shift tables: words this frequent in both slices")
    top: int = Field(20, gt=0, description="most shifted words listed per slice pair")
    exclude_stopwords: bool = Field(
        True, description="leave gensim's English stopwords out of shift tables (they shift with genre)"
    )
    plot_words: int = Field(4, ge=0, description="words whose neighbours are plotted per pair")

    @model_validator(mode="after")
    def _alpha_decays(self) -> CadeConfig:
        if self.min_alpha > self.alpha:
            raise ValueError(f"min_alpha ({self.min_alpha}) must not exceed alpha ({self.alpha})")
        return self
