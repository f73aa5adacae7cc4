"""Stage cade_align: CADE corpus alignment (Bianchi et al. 2020, arXiv 2004.06519). A word2vec compass on
all slices, then one embedding per slice trained against the compass's frozen context matrix, so a word's
vectors are comparable across slices, and shift tables ranked by the context test over the slices' texts
(components/cade). Slices: the
configured corpora (news vs encyclopedia by default) and the generated text: references, teacher and
student answers, all to the same prompts (the test split, when the distillation ran)."""

from __future__ import annotations

import mlflow

from semflow.caching import StageKey
from semflow.config import CadeConfig
from semflow.runtime import RunContext
from semflow.store import StageManifest
from tasks._stage import Outputs, cached_stage, read_output, run_stage


def key(cade: CadeConfig, prepare_data: StageManifest, generate_teacher: StageManifest | None,
        distill_student: StageManifest | None) -> StageKey:
    upstream = {"corpora": prepare_data.output("corpora").digest}
    if generate_teacher is not None:
        upstream["responses"] = generate_teacher.output("responses").digest
    if distill_student is not None:
        upstream["student_eval"] = distill_student.output("eval").digest
    return StageKey(stage="cade_align", config={"cade": cade}, upstream=upstream)


@cached_stage(key)
def cade_align(cade: CadeConfig, prepare_data: StageManifest, generate_teacher: StageManifest | None,
               distill_student: StageManifest | None, run: RunContext) -> StageManifest:
    from components.cade.report import align_and_report, generated_slice_texts
    from semflow.progress import Bars

    def body(out: Outputs):
        corpora = read_output(prepare_data, "corpora")
        texts = {name: group["text"].dropna().tolist() for name, group in corpora.groupby("corpus", sort=False)}
        generated, prompts = generated_slice_texts(
            read_output(generate_teacher, "responses") if generate_teacher is not None else None,
            read_output(distill_student, "eval") if distill_student is not None else None)
        with Bars(unit="word") as bars:
            report = align_and_report(texts | generated, cade, out.root, progress=bars.update)
        for name, frame in report.tables.items():
            out.table(name, frame)
        out.folder("embeddings")
        for png in report.plots:
            mlflow.log_artifact(str(png), "plots")
        mlflow.set_tags(report.tags | {"semflow.cade.generated_prompts": prompts})
        previews = {"shifts": report.tables["shifts"].head(50), "overlap": report.tables["overlap"],
                    "selfcheck": report.tables["selfcheck"]}
        return report.metrics, previews

    return run_stage(key(cade, prepare_data, generate_teacher, distill_student), run, body)
