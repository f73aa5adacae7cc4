"""`data`: where prompts, documents and corpora come from, and how prompts are split."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from semflow.config.base import Section


class BuiltinSource(Section):
    """Offline text shipped inside gensim's wheel (gensim.test.utils.datapath)."""

    kind: Literal["builtin"] = Field("builtin", description="selects this source type")
    name: Literal["lee", "wiki", "text8"] = Field(
        description="lee: Lee news corpus; wiki: a Wikipedia sample (104 articles); text8: head of text8"
    )
    limit: int | None = Field(None, gt=0, description="at most this many records (None: all)")


class FileSource(Section):
    """A local JSONL, CSV or Parquet file. `fields` maps our field names to the file's columns."""

    kind: Literal["file"] = Field("file", description="selects this source type")
    path: str = Field(description="the file; its bytes enter the cache key, so an edited file reruns the stage")
    format: Literal["auto", "jsonl", "csv", "parquet"] = Field("auto", description="auto: from the file extension")
    fields: dict[str, str] = Field(default_factory=dict, description="our field name -> the file's column name")
    limit: int | None = Field(None, gt=0, description="at most this many records (None: all)")


class HFSource(Section):
    """A Hugging Face dataset by name/config/split (needs the hub or a local datasets cache)."""

    kind: Literal["hf"] = Field("hf", description="selects this source type")
    name: str = Field(description="dataset name or local path, as datasets.load_dataset takes it")
    config: str | None = Field(None, description="dataset configuration name")
    split: str = Field("train", description="dataset split")
    fields: dict[str, str] = Field(default_factory=dict, description="our field name -> the dataset's column name")
    limit: int | None = Field(None, gt=0, description="at most this many records (None: all)")


Source = Annotated[BuiltinSource | FileSource | HFSource, Field(discriminator="kind")]


class BuiltinPrompts(Section):
    """Prompts built from the shipped corpora in three task families, with references.

    - summarise: a Lee news article without its lead sentence -> the lead sentence is the reference;
    - encyclopedia: a Wikipedia title -> the article's first paragraph is the reference;
    - continue: the first words of a Lee article (one summarise does not use) or of a text8 line -> the
      words that follow are the reference.
    """

    kind: Literal["builtin_prompts"] = Field("builtin_prompts", description="selects this source type")
    per_family: int = Field(16, gt=0, description="prompts per task family")
    max_input_words: int = Field(160, gt=0, description="articles are cut to this many words")
    summarise_input: Literal["rest", "article"] = Field(
        "rest", description="the summarise family's input: the article without its lead sentence (XSum's "
        "construction: the reference cannot be copied from the input) or the whole article (before 2026-12-02: "
        "copying its first sentence reproduces the reference)",
    )
    continue_source: Literal["lee", "text8"] = Field(
        "lee", description="the continue family's text: Lee news articles the summarise family leaves out, or "
        "text8's head (Porter-stemmed lowercase word lists, the source before 2026-12-02)",
    )


PromptSource = Annotated[BuiltinPrompts | FileSource | HFSource, Field(discriminator="kind")]


class SplitConfig(Section):
    """Prompts are split by a seeded hash of their id, so a prompt's split never depends on the others."""

    train: float = Field(0.8, ge=0, le=1, description="share of prompts in the training split")
    val: float = Field(0.1, ge=0, le=1, description="share in the validation split (validation loss)")
    test: float = Field(0.1, ge=0, le=1, description="share in the test split (ROUGE-L before/after)")
    seed: int = Field(0, description="salt of the split hash")

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1, got {total:g}")
        return self


class CorpusConfig(Section):
    """One CADE slice: a named corpus."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="slice name (letters, digits, _ . -)")
    source: Source = Field(description="where the slice's texts come from")


class DataConfig(Section):
    """Inputs of every stage: prompts (distillation), documents (SE-DSI), corpora (CADE)."""

    prompts: PromptSource = Field(BuiltinPrompts(), description="instructions with optional inputs and references")
    documents: Source = Field(BuiltinSource(name="wiki", limit=100), description="the SE-DSI collection")
    corpora: list[CorpusConfig] = Field(
        default_factory=lambda: [
            CorpusConfig(name="news", source=BuiltinSource(name="lee")),
            CorpusConfig(name="encyclopedia", source=BuiltinSource(name="wiki")),
        ],
        description="named corpora aligned by CADE",
    )
    split: SplitConfig = Field(SplitConfig(), description="train/val/test split of the prompts")

    @model_validator(mode="after")
    def _unique_corpus_names(self) -> DataConfig:
        names = [c.name for c in self.corpora]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"corpus names must be unique, repeated: {sorted(dup)}")
        return self
