"""Tests for components.data: builtin readers, file readers, schema validation, splits, datasets."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from components.data import (
    CORPUS_COLUMNS,
    DOCUMENT_COLUMNS,
    PROMPT_COLUMNS,
    DataError,
    assign_split,
    build_corpora,
    build_documents,
    build_prompts,
    builtin_prompts,
    builtin_skipped,
    content_digest,
    lee_articles,
    read_dataset,
    read_records,
    skipped_counts,
    text8_lines,
    wiki_articles,
    write_dataset,
)
from components.data.text import split_sentences
from components.data.wikitext import clean_wikitext
from semflow.config import (
    BuiltinPrompts,
    BuiltinSource,
    CorpusConfig,
    FileSource,
    HFSource,
    SplitConfig,
)

WIKI_PAGES_IN_DUMP = 206  # <page> elements in gensim's shortened enwiki dump


def write_jsonl(path: Path, lines: list[object]) -> Path:
    """Each item is written as JSON unless it is already a str (used for raw/bad lines)."""
    path.write_text(
        "\n".join(item if isinstance(item, str) else json.dumps(item) for item in lines) + "\n",
        encoding="utf-8",
    )
    return path


# ------------------------------------------------------------------------------- builtin readers
def test_lee_articles_one_article_per_line_in_file_order():
    articles = lee_articles()
    assert len(articles) == 300
    assert all(a.strip() for a in articles)
    assert articles[0].startswith("Hundreds of people have been forced to vacate their homes")
    assert builtin_skipped("lee") == {"lee_empty_lines": 0}


def test_text8_lines_are_stemmed_lowercase_tokens():
    lines = text8_lines()
    # The file has 250 lines (\r\n endings), not 251 as a naive split on "\n" suggests.
    assert len(lines) == 250
    assert lines[0].startswith("anarch greek rule stem archon")
    assert all(line == line.lower() and "\r" not in line for line in lines)


def test_wiki_articles_exclude_redirects_and_other_namespaces():
    articles = wiki_articles()
    titles = [t for t, _ in articles]
    assert titles[0] == "Anarchism"
    assert "Autism" in titles
    # Redirect pages in the dump (<redirect> element and #REDIRECT text).
    assert "AccessibleComputing" not in titles
    assert "AfghanistanHistory" not in titles
    # Namespace 4 (Wikipedia:) page.
    assert not any(t.startswith("Wikipedia:") for t in titles)
    assert len(set(titles)) == len(titles)

    skipped = builtin_skipped("wiki")
    assert skipped["wiki_redirects"] == 99
    assert skipped["wiki_other_namespace"] == 1
    # Nothing vanishes: every page is either an article or counted under a reason.
    assert len(articles) + sum(skipped.values()) == WIKI_PAGES_IN_DUMP


def test_wiki_text_is_plain_prose_paragraphs():
    text = dict(wiki_articles())["Anarchism"]
    assert text.startswith("Anarchism is a political philosophy that advocates self-governed")
    assert "\n\n" in text and "\n\n\n" not in text
    for _, body in wiki_articles():
        assert body.strip()
        for marker in ("[[", "]]", "{{", "}}", "'''", "<ref", "thumb|"):
            assert marker not in body
        assert not any(p.startswith("=") for p in body.split("\n\n"))


def test_clean_wikitext_drops_captions_headings_tables_and_back_matter():
    raw = "\n".join(
        [
            "[[File:Sun.jpg|thumb|A caption that mentions [[the Sun]] and ends with a period.]]",
            "'''Albedo''' is the [[diffuse reflection|diffuse reflectivity]] of a surface.",
            '{| class="wikitable"',
            "|-",
            "| Fresh snow || 0.80",
            "|}",
            "<gallery>",
            "File:Snow.jpg|Snow on a mountain under a clear blue sky, seen from the valley.",
            "</gallery>",
            "== Terrestrial albedo ==",
            "* Snow reflects most of the sunlight that falls on it.",
            "== References ==",
            "* Lambert, Johann Heinrich. Photometria, a book published in 1760.",
        ]
    )
    assert clean_wikitext(raw) == (
        "Albedo is the diffuse reflectivity of a surface.\n\n"
        "Snow reflects most of the sunlight that falls on it."
    )


def test_wiki_articles_returns_a_fresh_list_each_time():
    first = wiki_articles()
    first.clear()
    assert len(wiki_articles()) > 100


def test_split_sentences_keeps_initials_together():
    text = 'The U.S. team won  the match. Dr. Smith said: "Great." It rained.'
    assert split_sentences(text) == [
        "The U.S. team won the match.",
        'Dr. Smith said: "Great."',
        "It rained.",
    ]


# ------------------------------------------------------------------------------ builtin prompts
def test_builtin_prompts_three_families_with_references():
    cfg = BuiltinPrompts(per_family=5, max_input_words=30)
    rows = builtin_prompts(cfg)
    assert len(rows) == 15
    by_family: dict[str, list[dict]] = {}
    for row in rows:
        by_family.setdefault(row["family"], []).append(row)
    assert {k: len(v) for k, v in by_family.items()} == {
        "summarise": 5,
        "encyclopedia": 5,
        "continue": 5,
    }
    assert len({r["id"] for r in rows}) == 15
    for row in rows:
        assert row["instruction"].strip()
        assert row["reference"] and row["reference"].strip()

    articles = lee_articles()
    for row in by_family["summarise"]:
        assert row["id"].startswith("summarise-")
        assert 0 < len(row["input"].split()) <= 30
        # XSum's construction: the reference is the article's lead sentence, the input what follows it.
        sentences = split_sentences(articles[int(row["id"].removeprefix("summarise-"))])
        assert row["reference"] == sentences[0]
        assert row["input"] == " ".join(" ".join(sentences[1:]).split()[:30])
        assert row["reference"] not in row["input"]
    for row in by_family["encyclopedia"]:
        assert row["input"] == ""
        assert row["instruction"].startswith("Write a short encyclopedia paragraph about ")
        assert len(row["reference"].split()) <= 30
    for row in by_family["continue"]:
        assert len(row["input"].split()) == 40
        assert len(row["reference"].split()) == 40

    # Spread over the corpus, not just its first records.
    assert [r["id"] for r in by_family["summarise"]] == [
        "summarise-0000",
        "summarise-0060",
        "summarise-0120",
        "summarise-0180",
        "summarise-0240",
    ]
    assert by_family["summarise"][0]["reference"] == (
        "Hundreds of people have been forced to vacate their homes in the Southern Highlands of "
        "New South Wales as strong winds today pushed a huge bushfire towards the town of Hill Top."
    )
    assert builtin_prompts(cfg) == rows  # deterministic


def test_builtin_prompts_summarise_input_article_keeps_the_lead():
    row = builtin_prompts(BuiltinPrompts(per_family=1, summarise_input="article", max_input_words=30))[0]
    assert row["id"] == "summarise-0000"
    assert row["input"] == " ".join(lee_articles()[0].split()[:30])
    assert row["input"].startswith(row["reference"][:40])


def test_builtin_prompts_continue_reference_follows_input():
    row = [r for r in builtin_prompts(BuiltinPrompts(per_family=1, continue_source="text8")) if r["family"] == "continue"][0]
    words = text8_lines()[0].split()
    assert row["id"] == "continue-0000"
    assert row["input"] == " ".join(words[:40])
    assert row["reference"] == " ".join(words[40:80])


def test_builtin_prompts_continue_from_lee_uses_articles_summarise_leaves_out():
    rows = builtin_prompts(BuiltinPrompts(per_family=40))
    summarised = {int(r["id"].removeprefix("summarise-")) for r in rows if r["family"] == "summarise"}
    continued = [r for r in rows if r["family"] == "continue"]
    assert len(continued) == 40
    articles = lee_articles()
    for row in continued:
        i = int(row["id"].removeprefix("continue-lee-"))
        assert i not in summarised
        words = articles[i].split()
        assert row["input"] == " ".join(words[:40])
        assert row["reference"] == " ".join(words[40:80])  # whole: the article has >= 80 words
    assert len({r["id"] for r in continued}) == 40


def test_per_family_larger_than_a_corpus_takes_all_and_reports_the_shortfall():
    df = build_prompts(BuiltinPrompts(per_family=250, max_input_words=20, continue_source="text8"), SplitConfig())
    sizes = df["family"].value_counts().to_dict()
    skipped = skipped_counts(df)
    assert sizes["summarise"] == 250 and skipped["summarise_shortfall"] == 0
    assert sizes["continue"] == 250 and skipped["continue_shortfall"] == 0
    # The wiki dump has only ~100 articles: all of them are used, the rest is counted.
    assert 90 < sizes["encyclopedia"] < 250
    assert sizes["encyclopedia"] + skipped["encyclopedia_shortfall"] == 250
    assert df["id"].is_unique
    # From Lee, continue gets only the 50 articles summarise leaves out, less those under 80 words.
    lee_df = build_prompts(BuiltinPrompts(per_family=250, max_input_words=20), SplitConfig())
    lee = skipped_counts(lee_df)
    continued = int((lee_df["family"] == "continue").sum())
    assert continued == 50 - lee["continue_too_short"] > 0
    assert lee["continue_shortfall"] == 250 - continued


def test_build_prompts_builtin_has_columns_splits_and_skipped_counts():
    df = build_prompts(BuiltinPrompts(per_family=4), SplitConfig())
    assert list(df.columns) == PROMPT_COLUMNS
    assert len(df) == 12
    assert set(df["split"]) <= {"train", "val", "test"}
    skipped = skipped_counts(df)
    assert skipped["wiki_redirects"] == 99
    assert "encyclopedia_no_lead" in skipped


# ------------------------------------------------------------------------------------- splits
def test_assign_split_matches_the_documented_formula():
    cfg = SplitConfig(train=0.5, val=0.25, test=0.25, seed=7)
    ids = [f"p{i}" for i in range(50)]
    expected = []
    for id_ in ids:
        u = int(hashlib.sha256(f"7:{id_}".encode()).hexdigest()[:15], 16) / 16**15
        expected.append("train" if u < 0.5 else "val" if u < 0.75 else "test")
    assert assign_split(ids, cfg) == expected
    assert len(set(expected)) == 3


def test_assign_split_is_deterministic_and_stable_under_adding_ids():
    cfg = SplitConfig(seed=3)
    ids = [f"prompt-{i}" for i in range(300)]
    base = assign_split(ids, cfg)
    assert assign_split(ids, cfg) == base
    extended = assign_split([f"other-{i}" for i in range(500)] + ids[::-1], cfg)
    assert extended[500:] == base[::-1]


def test_assign_split_proportions_on_2000_ids():
    ids = [f"id-{i:05d}" for i in range(2000)]
    splits = assign_split(ids, SplitConfig(train=0.7, val=0.2, test=0.1, seed=0))
    share = {name: splits.count(name) / len(ids) for name in ("train", "val", "test")}
    assert share["train"] == pytest.approx(0.7, abs=0.04)
    assert share["val"] == pytest.approx(0.2, abs=0.03)
    assert share["test"] == pytest.approx(0.1, abs=0.03)


def test_assign_split_changes_with_seed():
    ids = [f"id-{i}" for i in range(500)]
    a = assign_split(ids, SplitConfig(seed=0))
    b = assign_split(ids, SplitConfig(seed=1))
    differing = sum(x != y for x, y in zip(a, b, strict=True))
    assert differing > 50


def test_assign_split_all_train():
    assert set(assign_split([str(i) for i in range(100)], SplitConfig(train=1, val=0, test=0))) == {
        "train"
    }


# ------------------------------------------------------------------------------ file round-trips
def test_jsonl_prompts_with_field_mapping(tmp_path):
    path = write_jsonl(
        tmp_path / "qa.jsonl",
        [
            {"question": "What is 2+2?", "answer": "4", "extra": 1},
            "",  # blank lines are allowed
            {"question": "Name a colour.", "context": "Pick one.", "family": "quiz"},
        ],
    )
    source = FileSource(
        path=str(path),
        fields={"instruction": "question", "reference": "answer", "input": "context"},
    )
    df = build_prompts(source, SplitConfig())
    assert list(df.columns) == PROMPT_COLUMNS
    assert df["instruction"].tolist() == ["What is 2+2?", "Name a colour."]
    assert df["input"].tolist() == ["", "Pick one."]
    assert df["family"].tolist() == ["custom", "quiz"]
    assert df.loc[0, "reference"] == "4"
    assert pd.isna(df.loc[1, "reference"])
    expected_id = hashlib.sha1(b"What is 2+2?\x1f").hexdigest()[:16]
    assert df.loc[0, "id"] == expected_id
    assert df["split"].tolist() == assign_split(df["id"].tolist(), SplitConfig())
    assert skipped_counts(df) == {"blank_lines": 1}


def test_read_records_carries_file_line_positions(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [{"a": 1}, "", {"a": 2}])
    records = read_records(FileSource(path=str(path)))
    assert [r["_where"] for r in records] == [f"{path}:1", f"{path}:3"]
    assert [r["a"] for r in records] == [1, 2]


def test_csv_prompts_keep_strings_and_empty_cells(tmp_path):
    path = tmp_path / "prompts.csv"
    path.write_text(
        'id,prompt,gold\n007,"Say hi, politely.",hello\n008,Say bye.,\n', encoding="utf-8"
    )
    source = FileSource(path=str(path), fields={"instruction": "prompt", "reference": "gold"})
    df = build_prompts(source, SplitConfig())
    assert df["id"].tolist() == ["007", "008"]  # not parsed as integers
    assert df["instruction"].tolist() == ["Say hi, politely.", "Say bye."]
    assert df.loc[0, "reference"] == "hello"
    assert pd.isna(df.loc[1, "reference"])  # an empty cell means "no reference"


def test_prompt_columns_are_str_even_when_all_references_are_missing(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"instruction": "A."}, {"instruction": "B."}])
    df = build_prompts(FileSource(path=str(path)), SplitConfig())
    assert df["reference"].isna().all()
    assert all(df[c].dtype == "str" for c in PROMPT_COLUMNS)
    pd.testing.assert_frame_equal(read_dataset(write_dataset(df, tmp_path / "p.parquet").path), df)


def test_parquet_documents_with_field_mapping_and_int_ids(tmp_path):
    path = tmp_path / "docs.parquet"
    pd.DataFrame(
        {"key": [10, 11], "heading": ["One", None], "body": ["first text", "second text"]}
    ).to_parquet(path)
    source = FileSource(
        path=str(path), fields={"doc_id": "key", "title": "heading", "text": "body"}
    )
    df = build_documents(source)
    assert list(df.columns) == DOCUMENT_COLUMNS
    assert df.to_dict("records") == [
        {"doc_id": "10", "title": "One", "text": "first text"},
        {"doc_id": "11", "title": "", "text": "second text"},
    ]


def test_explicit_format_overrides_suffix(tmp_path):
    path = write_jsonl(tmp_path / "prompts.txt", [{"instruction": "Hi."}])
    df = build_prompts(FileSource(path=str(path), format="jsonl"), SplitConfig())
    assert df["instruction"].tolist() == ["Hi."]


def test_file_limit_keeps_first_records(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"Task {i}."} for i in range(10)])
    df = build_prompts(FileSource(path=str(path), limit=3), SplitConfig())
    assert df["instruction"].tolist() == ["Task 0.", "Task 1.", "Task 2."]


# ------------------------------------------------------------------------------------ bad input
def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = write_jsonl(
        tmp_path / "file.jsonl", [{"instruction": "a"}, {"instruction": "b"}, "{oops"]
    )
    with pytest.raises(DataError, match=r"file\.jsonl:3: invalid JSON"):
        read_records(FileSource(path=str(path)))


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = write_jsonl(tmp_path / "file.jsonl", [{"instruction": "a"}, "[1, 2]"])
    with pytest.raises(
        DataError, match=r"file\.jsonl:2: expected a JSON object per line, got list"
    ):
        read_records(FileSource(path=str(path)))


def test_missing_field_names_field_column_and_present_fields(tmp_path):
    path = write_jsonl(
        tmp_path / "data.jsonl",
        [{"question": "q1", "answer": "a1"}, {"answer": "a2"}, {"prompt": "q3", "answer": "a3"}],
    )
    source = FileSource(path=str(path), fields={"instruction": "question", "reference": "answer"})
    with pytest.raises(
        DataError,
        match=r"data\.jsonl:2: missing required field 'instruction' "
        r"\(mapped to column 'question'\); fields present: \['answer'\]",
    ):
        build_prompts(source, SplitConfig())


def test_missing_unmapped_field_lists_present_fields(tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"body": "x", "name": "y"}])
    with pytest.raises(
        DataError,
        match=r"docs\.jsonl:1: missing required field 'text'; "
        r"fields present: \['body', 'name'\]",
    ):
        build_documents(FileSource(path=str(path)))


def test_wrong_type_names_field_and_type(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [{"instruction": "ok"}, {"instruction": 42}])
    with pytest.raises(
        DataError, match=r"data\.jsonl:2: field 'instruction' must be a string, got int"
    ):
        build_prompts(FileSource(path=str(path)), SplitConfig())


def test_null_and_empty_required_fields(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"instruction": None}])
    with pytest.raises(DataError, match=r"a\.jsonl:1: required field 'instruction' is null"):
        build_prompts(FileSource(path=str(path)), SplitConfig())
    path = write_jsonl(tmp_path / "b.jsonl", [{"instruction": "  "}])
    with pytest.raises(DataError, match=r"b\.jsonl:1: required field 'instruction' is empty"):
        build_prompts(FileSource(path=str(path)), SplitConfig())


def test_csv_errors_name_the_row(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("instruction,reference\nfirst,r\n,r2\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"data\.csv row 2: required field 'instruction' is empty"):
        build_prompts(FileSource(path=str(path)), SplitConfig())


def test_duplicate_ids_name_both_positions(tmp_path):
    path = write_jsonl(
        tmp_path / "data.jsonl",
        [
            {"id": "a", "instruction": "x"},
            {"id": "b", "instruction": "y"},
            {"id": "a", "instruction": "z"},
        ],
    )
    with pytest.raises(
        DataError, match=r"duplicate id 'a' at \S*data\.jsonl:1 and \S*data\.jsonl:3"
    ):
        build_prompts(FileSource(path=str(path)), SplitConfig())


def test_identical_prompts_without_ids_are_duplicates(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [{"instruction": "same"}, {"instruction": "same"}])
    with pytest.raises(DataError, match=r"duplicate id '[0-9a-f]{16}'"):
        build_prompts(FileSource(path=str(path)), SplitConfig())


def test_unknown_field_in_mapping_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [{"q": "x"}])
    source = FileSource(path=str(path), fields={"instrution": "q"})
    with pytest.raises(DataError, match=r"unknown field\(s\) \['instrution'\]"):
        build_prompts(source, SplitConfig())


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.jsonl", ""),
        ("blank.jsonl", "\n  \n"),
        ("empty.csv", ""),
        ("header.csv", "instruction\n"),
    ],
)
def test_source_without_records_is_an_error(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=rf"{name} has no records"):
        read_records(FileSource(path=str(path)))


def test_empty_parquet_is_an_error(tmp_path):
    path = tmp_path / "empty.parquet"
    pd.DataFrame({"text": pd.Series([], dtype="str")}).to_parquet(path)
    with pytest.raises(DataError, match=r"empty\.parquet has no records"):
        build_documents(FileSource(path=str(path)))


def test_unknown_suffix_lists_accepted_suffixes(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text('{"instruction": "x"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"data\.txt.*'\.txt'.*accepted suffixes: \.jsonl, "):
        read_records(FileSource(path=str(path)))


def test_missing_path_is_named(tmp_path):
    path = tmp_path / "nowhere" / "data.jsonl"
    with pytest.raises(DataError, match=rf"data file not found: {path}"):
        read_records(FileSource(path=str(path)))


def test_hf_dataset_offline_gives_a_clear_error(monkeypatch, tmp_path):
    datasets = pytest.importorskip("datasets")
    hub_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # Both libraries read the variables at import time, which may already have happened.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    source = HFSource(name="semflow-tests/no-such-dataset", config="main", split="validation")
    with pytest.raises(DataError) as info:
        build_prompts(source, SplitConfig())
    message = str(info.value)
    assert "could not be loaded" in message
    assert "'semflow-tests/no-such-dataset'" in message
    assert "config='main'" in message and "split='validation'" in message
    assert "local datasets cache" in message


# ------------------------------------------------------------------------- documents and corpora
def test_build_documents_builtin_wiki_with_limit():
    df = build_documents(BuiltinSource(name="wiki", limit=5))
    assert list(df.columns) == DOCUMENT_COLUMNS
    assert df["doc_id"].tolist() == [f"wiki-{i:04d}" for i in range(5)]
    assert df["title"].tolist() == [t for t, _ in wiki_articles()[:5]]
    assert skipped_counts(df)["wiki_redirects"] == 99


def test_build_documents_builtin_lee_titles():
    df = build_documents(BuiltinSource(name="lee", limit=2))
    assert df.loc[0, "title"] == "Hundreds of people have been forced to vacate…"
    assert df.loc[0, "text"] == lee_articles()[0]


def test_build_corpora_order_counts_and_prefixed_skips(tmp_path):
    path = write_jsonl(tmp_path / "mine.jsonl", [{"body": "alpha"}, "", {"body": "beta"}])
    corpora = [
        CorpusConfig(name="news", source=BuiltinSource(name="lee", limit=3)),
        CorpusConfig(name="mine", source=FileSource(path=str(path), fields={"text": "body"})),
        CorpusConfig(name="stems", source=BuiltinSource(name="text8")),
    ]
    df = build_corpora(corpora)
    assert list(df.columns) == CORPUS_COLUMNS
    assert df["corpus"].tolist() == ["news"] * 3 + ["mine"] * 2 + ["stems"] * 250
    assert df["text"].tolist()[:5] == lee_articles()[:3] + ["alpha", "beta"]
    assert skipped_counts(df) == {
        "news/lee_empty_lines": 0,
        "mine/blank_lines": 1,
        "stems/text8_empty_lines": 0,
    }


# ------------------------------------------------------------------------- write/read + digest
def _table(reference: str | None = "r1") -> pd.DataFrame:
    rows = [
        {"id": "a", "family": "f", "instruction": "i1", "input": "", "reference": reference},
        {"id": "b", "family": "f", "instruction": "i2 é", "input": "x", "reference": None},
    ]
    return pd.DataFrame(rows, columns=PROMPT_COLUMNS[:-1])


def test_write_dataset_digest_tracks_content(tmp_path):
    one = write_dataset(_table(), tmp_path / "one.parquet")
    two = write_dataset(_table(), tmp_path / "sub" / "two.parquet")
    assert one.digest == two.digest
    assert len(one.digest) == 64
    assert (one.rows, one.columns) == (2, PROMPT_COLUMNS[:-1])
    assert Path(two.path).is_file()

    changed = _table()
    changed.loc[1, "input"] = "y"
    assert write_dataset(changed, tmp_path / "three.parquet").digest != one.digest
    assert content_digest(_table(reference=None)) != one.digest
    assert (
        content_digest(_table()[["family", "id", "instruction", "input", "reference"]])
        != one.digest
    )


def test_digest_ignores_dtypes_and_null_flavour():
    with_none = pd.DataFrame(_table().astype(object).to_dict("records"), dtype=object)
    with_none.loc[1, "reference"] = None
    with_nan = with_none.astype("str")  # pandas' str dtype stores the missing value as NaN
    assert with_none.loc[1, "reference"] is None
    assert pd.isna(with_nan.loc[1, "reference"])
    assert content_digest(with_nan) == content_digest(with_none)


def test_read_dataset_round_trip(tmp_path):
    df = build_prompts(BuiltinPrompts(per_family=2), SplitConfig())
    info = write_dataset(df, tmp_path / "prompts.parquet")
    back = read_dataset(info.path)
    pd.testing.assert_frame_equal(back, df)
    assert content_digest(back) == info.digest
    assert skipped_counts(back) == skipped_counts(df) != {}
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed away


def test_read_dataset_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"dataset file not found: .*absent\.parquet"):
        read_dataset(tmp_path / "absent.parquet")


def test_data_prep_counts_the_words_cade_learns_from():
    from components.cade.text import tokenize
    from components.data.text import word_tokens

    for text in ("The cat sat.", "!!! ???", "x y z", "Ünïcode wörds and a-very-long-compound-wordthatgoeson", ""):
        assert word_tokens(text) == tokenize(text)
