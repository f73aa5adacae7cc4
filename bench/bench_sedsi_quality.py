"""SE-DSI on real queries: Cranfield, beside BM25 and their reciprocal-rank fusion, with paired bootstrap CIs.

    # CPU size (2 idle cores: 32 min per backbone for both settings, the teacher's labelled setting 20 min):
    # a seeded sample of queries, their relevant documents and seeded distractors; 2 seeds
    .venv/bin/python bench/bench_sedsi_quality.py --data ../shared/data/cranfield \\
        --student <student folder> --markdown bench/results/sedsi_cranfield.md
    # the ED prompt / scorer study only (no index training)
    .venv/bin/python bench/bench_sedsi_quality.py --data ../shared/data/cranfield --study-only
    # GPU size: all 1,400 documents and 225 queries (bench/gpu_check.sh)
    python3 bench/bench_sedsi_quality.py --data <cranfield> --preset gpu --device cuda --dtype bfloat16

What runs, per seed:
1. the collection: `--queries` queries sampled with the seed, their relevant documents (qrels grade <=
   `--max-grade`; Cranfield grades 1 = complete answer ... 4 = minimum interest) and `--distractors` other
   documents sampled with the seed; half of the queries (components.sedsi.queries.split_queries, the
   same seed) train, the other half evaluate, and so do the other queries of the collection (every
   Cranfield query not sampled with at least one relevant document in it, judged against its relevant
   documents inside the collection: BM25 and SE-DSI rank the same collection, so this is fair to both and
   gives the paired bootstrap 3-6x more queries at no indexing cost; `--no-other-queries` leaves them out);
2. EDs: the teacher samples `--candidates` queries per document once; every ED scorer variant (paper:
   mean log-prob, no filter; ours: specificity with the content-word filter) ranks the same samples, so
   their collision rate and generic share compare on equal candidates;
3. per backbone (the distilled student, the teacher, a seq2seq model when `--seq2seq` names one): SE-DSI
   zero-shot (indexing pairs only) and with the training half as labelled-query pairs, both evaluated on
   the evaluation queries of step 1, with BM25 and the hybrid on the same queries
   (components/sedsi/build.py, its `eval_sets`);
4. first seed, first backbone: the paper's ED scorer in place of ours (labelled setting), the scorer's
   effect on retrieval; with `--compare-prompts` also the other ED prompt's generic share on the same
   documents.
Then over all seeds' evaluation queries: means and a paired bootstrap (scipy, 10,000 resamples, 95%) of
SE-DSI minus BM25 and hybrid minus BM25 on Hits@1 and MRR@10.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METRICS = ("hits@1", "hits@10", "mrr@3", "mrr@10", "mrr@20")
PRESETS = {
    # CPU: 150 steps (3.5-5 passes over the pairs: every document's text finds its own ED, indexed hits@1
    # 1.0; 30 steps were under one pass); 2 idle cores: 32 min for the student's two settings on 2 seeds,
    # 20 more for the teacher's labelled setting (bench/results/sedsi.md)
    "cpu": dict(queries=8, distractors=6, max_grade=2, steps=150, batch=8, max_input_tokens=64, candidates=10,
                doc_tokens=96, beams=20, ed_batch=30),
    # GPU: the whole collection (all 1,400 documents, every query), longer training
    "gpu": dict(queries=0, distractors=0, max_grade=4, steps=2000, batch=64, max_input_tokens=128, candidates=10,
                doc_tokens=256, beams=20, ed_batch=640),
}


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def read_cranfield(folder: Path):
    """(docs: doc_id -> (title, text), queries: qid -> text, qrels: qid -> {doc_id: grade})."""
    docs = {}
    for line in (folder / "docs.jsonl").read_text().splitlines():
        if line.strip():
            d = json.loads(line)
            text = d["text"].strip() or d["title"].strip()  # a few abstracts are empty: their title stands in
            docs[str(d["doc_id"])] = (d["title"].strip(), text)
    queries = {}
    for line in (folder / "queries.jsonl").read_text().splitlines():
        if line.strip():
            q = json.loads(line)
            queries[str(q["query_id"])] = q["text"].strip()
    qrels: dict[str, dict[str, int]] = {}
    for i, line in enumerate((folder / "qrels.tsv").read_text().splitlines()):
        if i == 0 or not line.strip():
            continue
        qid, doc, grade = line.split("\t")
        qrels.setdefault(qid, {})[doc] = int(grade)
    return docs, queries, qrels


def sample_collection(docs, queries, qrels, n_queries: int, n_distractors: int, max_grade: int, seed: int):
    """A seeded query sample, its relevant documents (grade <= max_grade) and seeded distractors."""
    judged = sorted((q for q in queries if any(g <= max_grade and d in docs for d, g in qrels.get(q, {}).items())),
                    key=int)
    rng = random.Random(seed)
    picked = sorted(rng.sample(judged, n_queries) if n_queries else judged, key=int)
    relevant = {q: {d: 1 for d, g in qrels[q].items() if g <= max_grade and d in docs} for q in picked}
    wanted = sorted({d for rel in relevant.values() for d in rel}, key=int)
    others = sorted(set(docs) - set(wanted), key=int)
    extra = rng.sample(others, min(n_distractors, len(others))) if n_queries else others
    doc_ids = sorted(set(wanted) | set(extra), key=int)
    return doc_ids, {q: queries[q] for q in picked}, relevant


def other_queries(queries, qrels, picked: dict[str, str], doc_ids: list[str], max_grade: int):
    """The queries not sampled that have a relevant document (grade <= max_grade) in the collection, each with
    its relevant documents inside the collection: (qid -> text, qid -> {doc_id: 1})."""
    inside = set(doc_ids)
    rel = {q: {d: 1 for d, g in qrels.get(q, {}).items() if g <= max_grade and d in inside}
           for q in sorted(queries, key=int) if q not in picked}
    rel = {q: r for q, r in rel.items() if r}
    return {q: queries[q] for q in rel}, rel


def write_queries(folder: Path, name: str, queries: dict[str, str], qrels: dict[str, dict[str, int]]):
    qf, rf = folder / f"{name}-queries.jsonl", folder / f"{name}-qrels.jsonl"
    qf.write_text("".join(json.dumps({"qid": q, "query": t}) + "\n" for q, t in queries.items()))
    rf.write_text("".join(json.dumps({"qid": q, "doc_id": d, "relevance": g}) + "\n"
                          for q, rel in qrels.items() for d, g in rel.items()))
    return str(qf), str(rf)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="folder with docs.jsonl, queries.jsonl, qrels.tsv")
    parser.add_argument("--report", type=Path, nargs="+", help="merge the JSON files of earlier runs (e.g. one "
                        "per backbone) into one set of tables; nothing is run")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--backbones", nargs="+", default=["student", "teacher"],
                        help="student (needs --student), teacher, seq2seq (needs --seq2seq)")
    parser.add_argument("--student", help="folder of a saved student (e.g. a distill_student artifact's student/)")
    parser.add_argument("--seq2seq", help="folder or spec of an encoder-decoder model that loads offline")
    parser.add_argument("--teacher", default="smollm2-135m-instruct")
    for name in ("queries", "distractors", "max_grade", "steps", "batch", "max_input_tokens", "candidates",
                 "doc_tokens", "beams", "ed_batch"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=None, help=f"overrides the preset's {name}")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--study-only", action="store_true", help="the ED prompt/sampling study only")
    parser.add_argument("--study-docs", type=int, default=24)
    parser.add_argument("--no-scorer-ablation", action="store_true",
                        help="skip the retrieval run with the paper's ED scorer (first seed, first backbone)")
    parser.add_argument("--settings", nargs="+", choices=("zero-shot", "labelled"), default=["zero-shot", "labelled"])
    parser.add_argument("--ed-variants", nargs="+", default=["ours: specificity + filter"],
                        help="ED variants whose EDs index (paper: mean log-prob | mean log-prob + filter | "
                        "specificity | ours: specificity + filter)")
    parser.add_argument("--compare-prompts", action="store_true",
                        help="first seed: also sample with the other ED prompt (plain / few_shot) and compare")
    parser.add_argument("--prompt", choices=("plain", "few_shot"), default="few_shot", help="the ED prompt (sedsi.ed.prompt)")
    parser.add_argument("--cache", type=Path, help="folder keeping each seed's sampled ED candidates, so that runs "
                        "for other backbones reuse them (same seed and ED settings: the same samples)")
    parser.add_argument("--no-other-queries", action="store_true",
                        help="evaluate on the sampled queries' evaluation half only (not on the collection's "
                        "other queries)")
    parser.add_argument("--json", type=Path, help="write every number here")
    parser.add_argument("--markdown", type=Path, help="write the tables here")
    args = parser.parse_args()
    if args.report:
        from components.sedsi.metrics import paired_bootstrap

        parts = [json.loads(f.read_text()) for f in args.report]
        out = {**parts[0], "ed": [], "runs": [], "study": [], "command": " ; ".join(x["command"] for x in parts),
               "backbones": [b for x in parts for b in x["backbones"]]}
        for x in parts:
            for name in ("ed", "runs", "study"):
                out[name] += x[name]
        out["ed"] = list({(r["seed"], r["variant"]): r for r in out["ed"]}.values())  # shared by the parts
        finish(out, args, time.perf_counter() - sum(x["total_wall_s"] for x in parts),
               cpu_seconds() - sum(x["total_cpu_s"] for x in parts), paired_bootstrap)
        return
    if args.data is None:
        parser.error("--data is required (unless --report)")
    p = dict(PRESETS[args.preset])
    for name in p:
        if getattr(args, name, None) is not None:
            p[name] = getattr(args, name)

    import torch

    from components.models import load_model
    from components.sedsi.build import build_index
    from components.sedsi.descriptions import Candidates, choose, sample_candidates
    from components.sedsi.metrics import paired_bootstrap
    from components.sedsi.queries import LabelledQueries, split_queries
    from semflow.config import ModelConfig, SedsiConfig
    from semflow.config.sedsi import EdConfig, QueriesConfig

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    docs, queries, qrels = read_cranfield(args.data)
    teacher_cfg = ModelConfig(spec=args.teacher, device=args.device, dtype=args.dtype)
    specs = {"teacher": teacher_cfg}
    if "student" in args.backbones:
        if not args.student:
            parser.error("--backbones student needs --student FOLDER")
        specs["student"] = teacher_cfg.model_copy(update={"spec": args.student})
    if "seq2seq" in args.backbones:
        if not args.seq2seq:
            parser.error("--backbones seq2seq needs --seq2seq FOLDER (none loads offline here: see docs/sedsi.md)")
        specs["seq2seq"] = teacher_cfg.model_copy(update={"spec": args.seq2seq})
    ed = EdConfig(candidates=p["candidates"], max_doc_tokens=p["doc_tokens"], heldout=0, prompt=args.prompt,
                  batch_size=p.get("ed_batch", 30))
    variants = {"paper: mean log-prob": dict(scorer="mean_logprob", filter_generic=False),
                "mean log-prob + filter": dict(scorer="mean_logprob", filter_generic=True),
                "specificity": dict(scorer="specificity", filter_generic=False),
                "ours: specificity + filter": dict(scorer="specificity", filter_generic=True)}
    out: dict = {"preset": args.preset, "params": p, "seeds": args.seeds, "backbones": args.backbones,
                 "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv), "ed": [], "runs": [],
                 "study": []}
    teacher = load_model(teacher_cfg)
    started, cpu0 = time.perf_counter(), cpu_seconds()

    if args.study_only:
        doc_ids, _, _ = sample_collection(docs, queries, qrels, p["queries"], p["distractors"], p["max_grade"],
                                          args.seeds[0])
        doc_ids = doc_ids[: args.study_docs]
        texts = [docs[d][1] for d in doc_ids]
        for prompt in ("plain", "few_shot"):
            for temperature, top_k in ((1.0, 10), (0.7, 10)):
                cfg = ed.model_copy(update={"prompt": prompt, "temperature": temperature, "top_k": top_k})
                t0 = time.perf_counter()
                cands = sample_candidates(teacher.model, teacher.tokenizer, doc_ids, texts, cfg, progress=False,
                                          score_without_doc=True)
                for name, v in variants.items():
                    d = choose(cands, cfg.model_copy(update=v))
                    out["study"].append({"prompt": prompt, "temperature": temperature, "top_k": top_k,
                                         "variant": name, "documents": len(doc_ids),
                                         "generic_share": d.generic_share, "collision_rate": d.collision_rate,
                                         "distinct_candidates": sum(map(len, d.candidates)) / len(doc_ids),
                                         "seconds": time.perf_counter() - t0, "example_eds": d.eds[:3]})
                print(out["study"][-4:], flush=True)
        finish(out, args, started, cpu0)
        return

    with tempfile.TemporaryDirectory(prefix="sedsi-quality-") as tmp:
        tmp = Path(tmp)
        for seed in args.seeds:
            doc_ids, picked, relevant = sample_collection(docs, queries, qrels, p["queries"], p["distractors"],
                                                          p["max_grade"], seed)
            texts = [docs[d][1] for d in doc_ids]
            titles = {d: docs[d][0] for d in doc_ids}
            _, evaluate = split_queries(LabelledQueries(picked, relevant), 0.5, seed=seed)
            all_files = write_queries(tmp, f"s{seed}-all", picked, relevant)
            eval_files = write_queries(tmp, f"s{seed}-eval", evaluate.queries, evaluate.qrels)
            others, others_rel = ({}, {}) if args.no_other_queries else other_queries(
                queries, qrels, picked, doc_ids, p["max_grade"])
            eval_set = {"labelled": ({**evaluate.queries, **others}, {**evaluate.qrels, **others_rel})}
            print(f"seed {seed}: {len(doc_ids)} documents, {len(picked)} queries sampled ({len(evaluate)} of them "
                  f"evaluate) + {len(others)} other queries evaluate", flush=True)
            t0, c0 = time.perf_counter(), cpu_seconds()
            cached = (args.cache / f"candidates-s{seed}-q{p['queries']}-d{p['distractors']}-g{p['max_grade']}-"
                      f"c{p['candidates']}-t{p['doc_tokens']}-b{ed.batch_size}-{ed.prompt}.json") if args.cache else None
            if cached is not None and cached.is_file():
                cands = Candidates(**json.loads(cached.read_text()))
            else:
                cands = sample_candidates(teacher.model, teacher.tokenizer, doc_ids, texts, ed, progress=False,
                                          score_without_doc=True)
                if cached is not None:
                    cached.parent.mkdir(parents=True, exist_ok=True)
                    cached.write_text(json.dumps(cands.__dict__))
            descriptions = {}
            for name, v in variants.items():
                descriptions[name] = choose(cands, ed.model_copy(update=v))
                out["ed"].append({"seed": seed, "variant": name, "documents": len(doc_ids),
                                  "collision_rate": descriptions[name].collision_rate,
                                  "generic_share": descriptions[name].generic_share})
            out.setdefault("timing", []).append({"seed": seed, "phase": "eds", "wall_s": time.perf_counter() - t0,
                                                 "cpu_s": cpu_seconds() - c0})
            if seed == args.seeds[0] and args.compare_prompts:
                other = "few_shot" if ed.prompt == "plain" else "plain"
                t1 = time.perf_counter()
                alt = sample_candidates(teacher.model, teacher.tokenizer, doc_ids, texts,
                                        ed.model_copy(update={"prompt": other}), progress=False, score_without_doc=True)
                for name, v in variants.items():
                    d = choose(alt, ed.model_copy(update={"prompt": other, **v}))
                    out["study"].append({"prompt": other, "temperature": ed.temperature, "top_k": ed.top_k,
                                         "variant": name, "documents": len(doc_ids), "generic_share": d.generic_share,
                                         "collision_rate": d.collision_rate, "seconds": time.perf_counter() - t1,
                                         "distinct_candidates": sum(map(len, d.candidates)) / len(doc_ids),
                                         "example_eds": d.eds[:5]})
                for name in variants:
                    d = descriptions[name]
                    out["study"].append({"prompt": ed.prompt, "temperature": ed.temperature, "top_k": ed.top_k,
                                         "variant": name, "documents": len(doc_ids), "generic_share": d.generic_share,
                                         "collision_rate": d.collision_rate, "seconds": 0.0,
                                         "distinct_candidates": sum(map(len, d.candidates)) / len(doc_ids),
                                         "example_eds": d.eds[:5]})
            jobs = [(b, s, v) for v in args.ed_variants for b in args.backbones for s in args.settings]
            if not args.no_scorer_ablation and seed == args.seeds[0]:
                jobs.append((args.backbones[0], "labelled", "paper: mean log-prob"))
            for backbone, setting, variant in jobs:
                qfile, rfile = eval_files if setting == "zero-shot" else all_files
                sedsi = SedsiConfig(
                    queries=QueriesConfig(queries=qfile, qrels=rfile, train_share=0.0 if setting == "zero-shot" else 0.5),
                    max_input_tokens=p["max_input_tokens"], num_beams=p["beams"], title_queries=False,
                    ed=ed, samples=0,
                    train={"lr": args.lr, "batch_size": p["batch"], "max_steps": p["steps"], "seed": seed,
                           "checkpoint_every": 10**6, "eval_every": 10**6},
                )
                t0, c0 = time.perf_counter(), cpu_seconds()
                model = load_model(specs[backbone])
                built = build_index(model.model, model.tokenizer, doc_ids, texts, titles, descriptions[variant], sedsi,
                                    tmp / f"ckpt-{seed}-{backbone}-{setting}-{variant[:4]}", progress=False,
                                    eval_sets=eval_set)
                table = built.table
                row = {"seed": seed, "backbone": backbone, "setting": setting, "ed": variant,
                       "documents": len(doc_ids), "train_pairs": len(built.pairs),
                       "wall_s": time.perf_counter() - t0, "cpu_s": cpu_seconds() - c0,
                       "eval_queries": {"sampled": len(evaluate), "other": len(others)},
                       "table": table.to_dict("records"), "per_query": built.per_query["labelled"]}
                row["train_steps"] = built.metrics["train.steps"]
                row.update(indexed(built, doc_ids, texts, p["beams"]))
                row["train_tokens_per_second"] = built.metrics["train.tokens_per_second"]
                out["runs"].append(row)
                if args.json:  # after every index: a run stopped early keeps what it measured (--report reads it)
                    out["total_wall_s"], out["total_cpu_s"] = time.perf_counter() - started, cpu_seconds() - cpu0
                    args.json.parent.mkdir(parents=True, exist_ok=True)
                    args.json.write_text(json.dumps(out, indent=1, default=str))
                lab = table.set_index("system")
                print(f"  {backbone:8} {setting:9} {variant[:12]:12} sedsi h@1 {lab.loc['sedsi', 'hits@1']:.3f} "
                      f"bm25 {lab.loc['bm25', 'hits@1']:.3f} hybrid {lab.loc['hybrid', 'hits@1']:.3f} "
                      f"({row['wall_s']:.0f} s)", flush=True)
                del model, built
    finish(out, args, started, cpu0, paired_bootstrap)


def indexed(built, doc_ids: list[str], texts: list[str], beams: int) -> dict[str, float]:
    """How far the index learned its own collection: each document's text (a training input, so not a retrieval
    measure) searched as the `document` pair it trained on; hits@1 when its own ED ranks first. A low value
    says the index is under-trained, whatever the query metrics show. Also the mean loss of the last 10% of
    the training steps."""
    found = built.index.search_eds(texts, num_beams=beams, kind="document")
    hit = [bool(h) and h[0][0] == built.index.eds[d] for d, h in zip(doc_ids, found, strict=True)]
    losses = [float(x) for x in built.history.get("loss", [])]
    tail = losses[-max(1, len(losses) // 10):] if losses else []
    return {"indexed_hits@1": sum(hit) / len(hit), "final_loss": sum(tail) / len(tail) if tail else float("nan")}


def finish(out: dict, args, started: float, cpu0: float, paired_bootstrap=None) -> None:
    out["total_wall_s"], out["total_cpu_s"] = time.perf_counter() - started, cpu_seconds() - cpu0
    lines = [f"# SE-DSI on Cranfield ({out['date']}, preset {out['preset']})", "", f"Command: `{out['command']}`", "",
             f"Parameters: {out['params']}; seeds {out['seeds']}; wall {out['total_wall_s'] / 60:.1f} min, "
             f"CPU {out['total_cpu_s'] / 60:.1f} min.", ""]
    if out["study"]:
        lines += ["## ED prompt and sampling study (same documents)", "",
                  "| prompt | temperature | top-k | ED variant | generic share | collision rate | distinct candidates/doc |",
                  "|---|---|---|---|---|---|---|"]
        for r in out["study"]:
            lines.append(f"| {r['prompt']} | {r['temperature']} | {r['top_k']} | {r['variant']} | "
                         f"{r['generic_share']:.3f} | {r['collision_rate']:.3f} | {r['distinct_candidates']:.1f} |")
        lines.append("")
    if out["ed"]:
        lines += ["## ED scorers on the same candidates", "", "| ED variant | seeds | generic share | collision rate |",
                  "|---|---|---|---|"]
        for name in dict.fromkeys(r["variant"] for r in out["ed"]):
            rows = [r for r in out["ed"] if r["variant"] == name]
            lines.append(f"| {name} | {len(rows)} | {sum(r['generic_share'] for r in rows) / len(rows):.3f} | "
                         f"{sum(r['collision_rate'] for r in rows) / len(rows):.3f} |")
        lines.append("")
    if out["runs"]:
        lines += ["## Retrieval on the evaluation queries (the sampled queries' evaluation half + the collection's "
                  "other queries; all seeds pooled)", "",
                  "| backbone | SE-DSI training | ED | system | queries | " + " | ".join(METRICS) + " |",
                  "|---|---|---|---|---|" + "---|" * len(METRICS)]
        groups = list(dict.fromkeys((r["backbone"], r["setting"], r["ed"]) for r in out["runs"]))
        boot = []
        for g in groups:
            runs = [r for r in out["runs"] if (r["backbone"], r["setting"], r["ed"]) == g]
            pooled = {s: {m: [v for r in runs for v in r["per_query"][s][m].values()] for m in METRICS}
                      for s in ("sedsi", "bm25", "hybrid")}
            for system in ("sedsi", "bm25", "hybrid"):
                vals = pooled[system]
                lines.append(f"| {g[0]} | {g[1]} | {g[2]} | {system} | {len(vals['hits@1'])} | "
                             + " | ".join(f"{sum(vals[m]) / len(vals[m]):.3f}" for m in METRICS) + " |")
            for metric in ("hits@1", "mrr@10"):
                for system in ("sedsi", "hybrid"):
                    d, lo, hi = paired_bootstrap(pooled[system][metric], pooled["bm25"][metric])
                    boot.append(f"| {g[0]} | {g[1]} | {g[2]} | {system} - bm25 | {metric} | {d:+.3f} | "
                                f"[{lo:+.3f}, {hi:+.3f}] |")
        lines += ["", "## Paired bootstrap over queries (95%, 10,000 resamples)", "",
                  "| backbone | SE-DSI training | ED | difference | metric | mean | 95% CI |", "|---|---|---|---|---|---|---|",
                  *boot, ""]
        lines += ["## Training and cost per index (indexed hits@1: each document's own text, a training input, "
                  "finds its own ED first; wall / CPU seconds, training + evaluation)", "",
                  "| seed | backbone | training | ED | documents | pairs | steps | final loss | indexed hits@1 | wall s "
                  "| CPU s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['seed']} | {r['backbone']} | {r['setting']} | {r['ed']} | {r['documents']} | {r['train_pairs']} | "
                  f"{r['train_steps']:.0f} | {r.get('final_loss', float('nan')):.3f} | "
                  f"{r.get('indexed_hits@1', float('nan')):.3f} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} |"
                  for r in out["runs"]]
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text + "\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
