import json
import re

import pytest

from components.data.errors import DataError
from components.sedsi.metrics import evaluate_run
from components.sedsi.queries import LabelledQueries, load_queries, split_queries

DOCS = {"d1", "d2", "d3", "d4"}

TOPICS = """\
<top>
<num> Number: 401
<title> foreign minorities,
Germany

<desc> Description:
What language and cultural differences impede the integration?

<narr> Narrative:
A relevant document will focus on the causes.
</top>

<top>
<num> 402
<title> Topic: behavioral genetics
<desc> Description: What is happening?
</top>
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(tmp_path, name, rows):
    return write(tmp_path, name, "".join((json.dumps(r) if not isinstance(r, str) else r) + "\n" for r in rows))


def queries_file(tmp_path, name="q.jsonl"):
    return jsonl(tmp_path, name, [{"qid": "q1", "query": "cats"}, {"qid": "q2", "query": "dogs"}])


def raises_at(path, line, *fragments):
    """pytest.raises for a DataError whose message starts with path:line and contains every fragment."""
    pattern = "^" + re.escape(f"{path}:{line}:") + "".join(f"(?s:.*){re.escape(f)}" for f in fragments)
    return pytest.raises(DataError, match=pattern)


# --------------------------------------------------------------------------------------------- formats
def test_jsonl_queries_and_jsonl_qrels(tmp_path):
    q = jsonl(tmp_path, "q.jsonl", [
        {"query_id": 2, "text": "  dogs bark  ", "extra": 1},
        "",
        {"id": "1", "title": "cats purr"},
        {"qid": "3", "query": "birds", "text": "ignored"},
    ])
    r = jsonl(tmp_path, "r.jsonl", [
        {"qid": "1", "doc_id": "d1", "relevance": 1},
        {"query_id": 2, "docno": "d2", "grade": 2},
        {"qid": "2", "doc_id": "d3", "rel": 0},
        {"query_id": "3", "doc_id": "d4", "grade": "3"},
        {"qid": "3", "doc_id": "d1", "grade": 1.0},
    ])
    lq = load_queries(q, r, DOCS)
    assert lq.queries == {"2": "dogs bark", "1": "cats purr", "3": "birds"}
    assert list(lq.queries) == ["2", "1", "3"]  # file order
    assert lq.qrels == {"2": {"d2": 2, "d3": 0}, "1": {"d1": 1}, "3": {"d4": 3, "d1": 1}}  # grade 0 kept
    assert lq.skipped == {"qrels_unknown_doc": 0, "qrels_unknown_query": 0, "queries_without_relevant": 0}
    assert len(lq) == 3


def test_trec_topics_and_trec_qrels(tmp_path):
    q = write(tmp_path, "topics.401-402", TOPICS)
    r = write(tmp_path, "qrels.401-402", "401 0 d1 1\n401 0 d2 0\n\n402 0 d3 2\n")
    lq = load_queries(q, r, ["d1", "d2", "d3"])
    assert lq.queries == {"401": "foreign minorities, Germany", "402": "behavioral genetics"}
    assert lq.qrels == {"401": {"d1": 1, "d2": 0}, "402": {"d3": 2}}


def test_trec_topics_with_closing_tags(tmp_path):
    q = write(tmp_path, "t.txt", "<top><num>7</num><title>short title</title><desc>x</desc></top>\n")
    r = write(tmp_path, "r.txt", "7 d1 1\n")
    assert load_queries(q, r, DOCS).queries == {"7": "short title"}


@pytest.mark.parametrize("text", [
    "query_id\tdoc_id\tgrade\nq1\td1\t2\nq2\td2\t1\n",
    "qid docno rel\nq1 d1 2\nq2 d2 1\n",
    "query-id\tcorpus-id\tscore\nq1\td1\t2\nq2\td2\t1\n",
    "doc_id\titer\tgrade\tquery_id\nd1\t0\t2\tq1\nd2\t0\t1\tq2\n",   # any column order, extra columns ignored
    "q1 0 d1 2\nq2 0 d2 1\n",        # TREC qrels
    "q1\td1\t2\n\nq2\td2\t1\n",      # 3 columns, no header
])
def test_text_qrels_variants(tmp_path, text):
    r = write(tmp_path, "r.tsv", text)
    lq = load_queries(queries_file(tmp_path), r, DOCS)
    assert lq.qrels == {"q1": {"d1": 2}, "q2": {"d2": 1}}


def test_auto_detection_by_suffix_and_content(tmp_path):
    # No telling suffix: the content decides, for both files.
    q_json = jsonl(tmp_path, "queries", [{"qid": "401", "query": "json query"}])
    q_trec = write(tmp_path, "topics", TOPICS)
    r_json = jsonl(tmp_path, "judgements", [{"qid": "401", "doc_id": "d1", "grade": 1}])
    r_text = write(tmp_path, "judgements2", "401 0 d1 1\n")
    assert load_queries(q_json, r_text, DOCS).queries == {"401": "json query"}
    assert load_queries(q_trec, r_json, DOCS).queries == {"401": "foreign minorities, Germany"}
    # The suffix wins over the content: a .jsonl file is read as JSON and the error says why.
    wrong = write(tmp_path, "topics.jsonl", TOPICS)
    with raises_at(wrong, 1, "invalid JSON", ".jsonl suffix"):
        load_queries(wrong, r_text, DOCS)
    odd = write(tmp_path, "odd", "hello\n")
    with pytest.raises(DataError, match=re.escape(f"{odd}: cannot tell the queries format")):
        load_queries(odd, r_text, DOCS)


def test_forced_formats(tmp_path):
    q = write(tmp_path, "topics.jsonl", TOPICS)  # misleading suffix, forced format
    r = write(tmp_path, "qrels.jsonl", "401 0 d1 1\n")
    lq = load_queries(q, r, DOCS, format="trec")
    assert lq.queries == {"401": "foreign minorities, Germany"}
    q2 = queries_file(tmp_path, "q.txt")
    r2 = write(tmp_path, "r.jsonl", "q1 d1 1\n")
    assert load_queries(q2, r2, DOCS, format=("jsonl", "tsv")).qrels == {"q1": {"d1": 1}}
    with pytest.raises(DataError, match=re.escape(f"{r2}:1: invalid JSON (format='jsonl')")):
        load_queries(q2, r2, DOCS, format="jsonl")
    with pytest.raises(ValueError, match="queries format 'csv'"):
        load_queries(q2, r2, DOCS, format="csv")
    with pytest.raises(ValueError, match="on_unknown_doc"):
        load_queries(q2, r2, DOCS, format=("jsonl", "tsv"), on_unknown_doc="ignore")


# ---------------------------------------------------------------------------------------------- errors
def test_query_errors_name_file_line_and_field(tmp_path):
    r = write(tmp_path, "r.tsv", "q1 d1 1\n")
    cases = [
        (['{"qid": "q1", "query": "a"}', "", "{not json"], 3, ["invalid JSON"]),
        (['{"qid": "q1", "query": "a"}', '["q2", "b"]'], 2, ["JSON object", "list"]),
        (['{"qid": "q1", "query": "a"}', '{"name": "q2", "query": "b"}'], 2,
         ["missing query id", "'qid'", "['name', 'query']"]),
        (['{"qid": "q1", "query": "a"}', '{"qid": "q2", "body": "b"}'], 2,
         ["missing query text", "'query', 'text', 'title'"]),
        (['{"qid": "q1", "query": "   "}'], 1, ["'query'", "empty"]),
        (['{"qid": "q1", "text": 5}'], 1, ["'text'", "must be a string"]),
        (['{"qid": 1.5, "text": "a"}'], 1, ["'qid'", "string or an integer"]),
        (['{"qid": "", "text": "a"}'], 1, ["'qid'", "empty"]),
        (['{"qid": "q1", "query": "a"}', '{"qid": "q1", "query": "b"}'], 2, ["duplicate query id 'q1'", "first at"]),
    ]
    for i, (lines, line, fragments) in enumerate(cases):
        q = jsonl(tmp_path, f"q{i}.jsonl", lines)
        with raises_at(q, line, *fragments):
            load_queries(q, r, DOCS)


def test_duplicate_int_and_str_query_ids_collide(tmp_path):
    q = jsonl(tmp_path, "q.jsonl", [{"qid": 1, "query": "a"}, {"qid": "1", "query": "b"}])
    with raises_at(q, 2, "duplicate query id '1'", f"{q}:1"):
        load_queries(q, write(tmp_path, "r.tsv", "1 d1 1\n"), DOCS)


@pytest.mark.parametrize("text, line, fragments", [
    ("<top>\n<num> 1\n<title> a\n</top>\n<top>\n<num> 1\n<title> b\n</top>\n", 5, ["duplicate query id '1'"]),
    ("<top>\n<num> 1\n<desc> only a description\n</top>\n", 1, ["no <title>"]),
    ("<top>\n<title> no number\n</top>\n", 1, ["no <num>"]),
    ("<top>\n<num> Number:\n<title> a\n</top>\n", 2, ["<num>", "empty"]),
    ("<top>\n<num> 1\n<title>\n<desc> d\n</top>\n", 3, ["<title>", "empty"]),
    ("<top>\n<num> 1\n<title> a\n\n<top>\n<num> 2\n<title> b\n</top>\n", 1, ["not closed", "line 5"]),
    ("<top>\n<num> 1\n<title> a\n</top>\n<top>\n<num> 2\n<title> b\n", 5, ["not closed"]),
    ("<top>\n<num> 1\n<title> a\n</top>\nstray words\n", 5, ["text outside"]),
    ("<num> 1\n<title> a\n", 1, ["outside a <top>"]),
    ("<top>\n<num> 1\n<num> 2\n<title> a\n</top>\n", 3, ["second <num>"]),
])
def test_trec_topic_errors(tmp_path, text, line, fragments):
    q = write(tmp_path, "topics.txt", text)
    with raises_at(q, line, *fragments):
        load_queries(q, write(tmp_path, "r.tsv", "1 d1 1\n"), DOCS, format="trec")


@pytest.mark.parametrize("name, text, line, fragments", [
    ("r.jsonl", '{"qid": "q1", "doc_id": "d1", "grade": 1}\n{"qid": "q1", "doc_id": "d2", "grade": "high"}\n', 2,
     ["'grade'", "integer grade", "'high'"]),
    ("r.jsonl", '{"qid": "q1", "doc_id": "d1", "grade": 1.5}\n', 1, ["'grade'", "integer grade"]),
    ("r.jsonl", '{"qid": "q1", "doc_id": "d1", "grade": true}\n', 1, ["'grade'", "integer grade"]),
    ("r.jsonl", '{"qid": "q1", "doc": "d1", "grade": 1}\n', 1, ["missing doc id", "'doc_id'"]),
    ("r.jsonl", '{"qid": "q1", "doc_id": "d1"}\n', 1, ["missing grade", "'relevance'"]),
    ("r.jsonl", '{"doc_id": "d1", "grade": 1}\n', 1, ["missing query id"]),
    ("r.jsonl", '{"qid": "q1", "doc_id": "d1", "grade": 1}\n{"qid"\n', 2, ["invalid JSON"]),
    ("r.tsv", "q1 0 d1 1\nq1 0 d2 x\n", 2, ["'rel'", "integer grade", "'x'"]),
    ("r.tsv", "query_id\tdoc_id\tgrade\nq1\td1\t1\nq1\td2\t1.5\n", 3, ["'grade'", "integer grade"]),
    ("r.tsv", "q1 0 d1 1\nq1 d2 1\n", 2, ["expected 4 columns", "got 3"]),
    ("r.tsv", "query_id\tdoc_id\tgrade\nq1\td1\n", 2, ["expected 3 columns like the header"]),
    ("r.tsv", "q1 Q0 d1 1 0.5 run\n", 1, ["expected 3 columns", "or 4", "got 6"]),
    ("r.tsv", "query_id\tdoc_id\tlabel\nq1\td1\t1\n", 1, ["names no grade column", "'relevance'"]),
    ("r.tsv", "q d r\nq1 d1 1\n", 1, ["integer grade", "if this is a header line"]),
    ("r.tsv", "q1 d1 1\nq1 d2 1\nq1 d1 2\n", 3, ["duplicate judgement", "'q1'", "'d1'", ":1)"]),
    ("r.jsonl", '{"qid": 1, "doc_id": "d1", "grade": 1}\n{"qid": "1", "doc_id": "d1", "grade": 0}\n', 2,
     ["duplicate judgement"]),
])
def test_qrels_errors_name_file_line_and_field(tmp_path, name, text, line, fragments):
    r = write(tmp_path, name, text)
    with raises_at(r, line, *fragments):
        load_queries(queries_file(tmp_path), r, DOCS)


def test_empty_files(tmp_path):
    q, r = queries_file(tmp_path), write(tmp_path, "r.tsv", "q1 d1 1\n")
    empty_q = write(tmp_path, "empty.jsonl", "\n\n")
    with pytest.raises(DataError, match=re.escape(f"{empty_q}: no query")):
        load_queries(empty_q, r, DOCS)
    empty_r = write(tmp_path, "empty.tsv", "")
    with pytest.raises(DataError, match=re.escape(f"{empty_r}: no judgement")):
        load_queries(q, empty_r, DOCS)
    header_only = write(tmp_path, "header.tsv", "query_id\tdoc_id\tgrade\n")
    with pytest.raises(DataError, match="no judgement"):
        load_queries(q, header_only, DOCS)
    no_suffix = write(tmp_path, "blank", "  \n")
    with pytest.raises(DataError, match=re.escape(f"{no_suffix}: the queries file is empty")):
        load_queries(no_suffix, r, DOCS)


def test_invalid_utf8_names_the_line(tmp_path):
    q = tmp_path / "q.jsonl"
    q.write_bytes(b'{"qid": "q1", "query": "a"}\n{"qid": "q2", "query": "\xff"}\n')
    with raises_at(q, 2, "not valid UTF-8"):
        load_queries(q, write(tmp_path, "r.tsv", "q1 d1 1\n"), DOCS)


# ------------------------------------------------------------------------------------- skips and counts
def test_unknown_docs_fail_names_first_few_and_count(tmp_path):
    rows = "q1 d1 1\n" + "".join(f"q1 x{i} 1\n" for i in range(7))
    r = write(tmp_path, "r.tsv", rows)
    with pytest.raises(DataError) as err:
        load_queries(queries_file(tmp_path), r, DOCS)
    msg = str(err.value)
    assert msg.startswith(f"{r}: 7 judgement(s)") and "on_unknown_doc='skip'" in msg
    assert f"{r}:2 'x0'" in msg and f"{r}:6 'x4'" in msg and "'x5'" not in msg


def test_skips_are_counted(tmp_path):
    q = jsonl(tmp_path, "q.jsonl", [
        {"qid": "q1", "query": "has relevant"},
        {"qid": "q2", "query": "no qrels at all"},
        {"qid": "q3", "query": "only unknown docs"},
        {"qid": "q4", "query": "only grade 0 and -1"},
        {"qid": "q5", "query": "relevant after skipping"},
    ])
    r = write(tmp_path, "r.tsv", "\n".join([
        "query_id\tdoc_id\tgrade",
        "q1\td1\t1", "q1\tzz\t2",                 # one unknown doc
        "q3\tyy\t1",                              # unknown doc -> q3 left with nothing
        "q4\td1\t0", "q4\td2\t-1",                # judged, none relevant
        "q5\td3\t2", "q5\tww\t0",
        "q9\td1\t1", "q9\tunknown-doc\t1",        # unknown query: counted, doc not checked
    ]) + "\n")
    lq = load_queries(q, r, DOCS, on_unknown_doc="skip")
    assert lq.queries == {"q1": "has relevant", "q5": "relevant after skipping"}
    assert lq.qrels == {"q1": {"d1": 1}, "q5": {"d3": 2}}
    assert lq.skipped == {"qrels_unknown_doc": 3, "qrels_unknown_query": 2, "queries_without_relevant": 3}
    assert evaluate_run({"q1": ["d1"], "q5": ["d1", "d3"]}, lq.qrels)["mrr@10"] == pytest.approx(0.75)
    # Unknown queries are skipped (and counted) even with on_unknown_doc="fail"; unknown docs are not.
    with pytest.raises(DataError, match="3 judgement"):
        load_queries(q, r, DOCS)


def test_empty_result_explains_why(tmp_path):
    q = write(tmp_path, "topics", "<top>\n<num> Number: 051\n<title> airbus subsidies\n</top>\n")
    r = write(tmp_path, "qrels", "51 0 d1 1\n")
    with pytest.raises(DataError) as err:
        load_queries(q, r, DOCS)
    msg = str(err.value)
    assert "no query left to evaluate" in msg and "'qrels_unknown_query': 1" in msg
    assert "['51']" in msg and "['051']" in msg
    r0 = write(tmp_path, "qrels0", "051 0 d1 0\n")
    with pytest.raises(DataError, match="'queries_without_relevant': 1"):
        load_queries(q, r0, DOCS)


# ------------------------------------------------------------------------------------------------ split
def _many(n=50):
    queries = {f"q{i}": f"text {i}" for i in range(n)}
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(n)}
    return LabelledQueries(queries, qrels, {"qrels_unknown_doc": 1, "qrels_unknown_query": 0,
                                            "queries_without_relevant": 2})


def test_split_is_seeded_disjoint_and_complete():
    lq = _many()
    train, ev = split_queries(lq, 0.8, seed=3)
    assert len(train) == 40 and len(ev) == 10
    assert set(train.queries).isdisjoint(ev.queries)
    assert set(train.queries) | set(ev.queries) == set(lq.queries)
    assert set(train.qrels) == set(train.queries) and set(ev.qrels) == set(ev.queries)
    assert all(train.qrels[q] == lq.qrels[q] for q in train.queries)
    assert list(ev.queries) == [q for q in lq.queries if q in ev.queries]  # file order kept
    assert train.skipped == ev.skipped == lq.skipped and train.skipped is not lq.skipped
    again = split_queries(_many(), 0.8, seed=3)
    assert (again[0].queries, again[1].queries) == (train.queries, ev.queries)
    other = split_queries(lq, 0.8, seed=4)
    assert set(other[0].queries) != set(train.queries)
    assert set(split_queries(lq, 0.5, seed=3)[0].queries) < set(train.queries)  # nested by share


def test_split_edges():
    lq = _many(7)
    train, ev = split_queries(lq, 0.0, seed=0)
    assert train.queries == {} and train.qrels == {} and ev.queries == lq.queries and ev.qrels == lq.qrels
    train, ev = split_queries(lq, 1.0, seed=0)
    assert train.queries == lq.queries and ev.queries == {}
    assert len(split_queries(lq, 0.5, seed=0)[0]) == 4  # 3.5 rounds half up
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="train_share"):
            split_queries(lq, bad, seed=0)
