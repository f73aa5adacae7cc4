"""Drive the MLflow UI in headless Chromium to prove a semflow pipeline run is inspectable.

`browse_pipeline_run` clicks through the path a person would take in the MLflow 3 UI:

1. the experiments list, switched to the "Model training" view (MLflow 3 opens experiments in the
   GenAI view by default, which has no runs table), then the experiment's runs table, where the
   pipeline's parent run must be a top-level row;
2. the parent row's expander, which must reveal the stage runs nested under it;
3. the child run named after a stage, whose overview must name the parent as "Parent run";
4. that run's Artifacts tab, which must list `manifest.json` at the artifact root;
5. `manifest.json` itself, whose text, as rendered by the UI (so fetched through the tracking
   server's artifact proxy), must be JSON with `"stage"` equal to that stage.

A screenshot is saved after each step, and on failure, so a reviewer can see what was checked.

Chromium flags: `/usr/bin/chromium` is Debian's build, not Playwright's bundled browser, and runs as
root in a container with no GPU and no internet access. `--no-sandbox` is needed as root in a
container; `--disable-gpu` avoids probing for a GPU that is not there; `--disable-quic`,
`--disable-background-networking`, `--disable-component-update` and `--disable-sync` stop Chromium
from calling Google services, which cannot be reached here (only failed connections and noise);
`--no-first-run` skips first-run setup; `--headless` duplicates `headless=True`, kept so the command
line is the one known to work here. The profile is a fresh temporary directory, so no state (the
UI's workflow toggle, dismissed tours) leaks in from earlier runs; Playwright refuses
`--user-data-dir` in `args`, hence `launch_persistent_context`.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 60_000  # generous: on two slow cores the React app's first render takes seconds
VIEWPORT = {"width": 1600, "height": 1000}

# The runs table is an ag-grid; a run's name cell holds its expander button and a link to the run.
RUN_NAME_CELL = '[role="gridcell"][col-id="attributes.`Run Name`"]'


def browse_pipeline_run(
    base_url: str, experiment_id: str, parent_run_id: str, child_stage: str, out_dir: Path
) -> dict:
    """Open the MLflow UI at base_url, find the pipeline's parent run in the experiment's runs
    table, expand its nested stage runs, open the child run named `child_stage`, open its Artifacts
    tab, open manifest.json and check its text; save a screenshot after each step under out_dir.

    Returns what it saw: {"parent_run": name of the parent row, "child_runs": [names of the rows
    that appeared nested under the parent, in table order], "child_run_id": ..., "artifact_text":
    text of manifest.json as shown, "screenshots": [paths, in step order], "seconds": wall time}.
    Raises AssertionError naming the failed step, with a screenshot of the page at that moment saved
    as `failed-<step>.png`, if a step fails.
    """
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
    from playwright.sync_api import expect, sync_playwright

    started = time.monotonic()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base_url = base_url.rstrip("/")
    seen: dict = {"screenshots": []}

    with (
        tempfile.TemporaryDirectory(prefix="semflow-chromium-") as profile,
        sync_playwright() as pw,
    ):
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=VIEWPORT,
        )
        try:
            context.set_default_timeout(TIMEOUT_MS)
            context.set_default_navigation_timeout(TIMEOUT_MS)
            page = context.new_page()

            def shot(name: str) -> None:
                path = out_dir / f"{len(seen['screenshots']) + 1:02d}-{name}.png"
                page.screenshot(path=str(path))
                seen["screenshots"].append(str(path))

            @contextmanager
            def step(name: str, what: str) -> Iterator[None]:
                try:
                    yield
                except (PlaywrightError, AssertionError) as exc:
                    failed = out_dir / f"failed-{name}.png"
                    try:
                        page.screenshot(path=str(failed))
                    except PlaywrightError:
                        failed = None
                    raise AssertionError(
                        f"MLflow UI step '{name}' failed: {what}\n  page: {page.url}\n"
                        f"  screenshot: {failed}\n  cause: {str(exc).strip().splitlines()[0]}"
                    ) from exc
                shot(name)

            name_links = page.locator(f"{RUN_NAME_CELL} a")

            def table_runs() -> list[tuple[str, str]]:
                return [
                    (link.inner_text().strip(), link.get_attribute("href") or "")
                    for link in name_links.all()
                ]

            parent_cell = page.locator(RUN_NAME_CELL).filter(
                has=page.locator(f'a[href$="/runs/{parent_run_id}"]')
            )

            where = f"experiment {experiment_id}'s runs table"
            with step("parent-run", f"parent run {parent_run_id} as a row of {where}"):
                page.goto(f"{base_url}/#/experiments")
                experiment_link = page.locator(f'a[href="#/experiments/{experiment_id}"]')
                experiment_link.wait_for()
                # Cosmetic: the "MLflow Assistant" side panel takes a third of the width.
                close = page.get_by_role("button", name="Close", exact=True)
                if close.count() == 1 and close.is_visible():
                    close.click()
                # MLflow 3 opens experiments in its GenAI view (traces, no runs table) unless the
                # sidebar's workflow toggle says "Model training".
                page.get_by_role("button", name="Model training", exact=True).click()
                experiment_link.click()
                try:
                    parent_cell.wait_for()
                except PlaywrightTimeoutError:
                    raise AssertionError(
                        f"no row links to run {parent_run_id}; rows shown: {table_runs()}"
                    ) from None
                seen["parent_run"] = parent_cell.locator("a").inner_text().strip()
                before = table_runs()

            with step("expanded", f"stage runs nested under {seen['parent_run']!r}, expanded"):
                # The name cell's only button is the expander ("+" box) of a run with children.
                parent_cell.get_by_role("button").click()
                # The nested rows arrive in one render: wait for the row count to grow.
                expect(name_links).not_to_have_count(len(before), timeout=TIMEOUT_MS)
                nested = [run for run in table_runs() if run not in before]
                seen["child_runs"] = [name for name, _ in nested]
                assert child_stage in seen["child_runs"], (
                    f"no run named {child_stage!r} among the rows that appeared: "
                    f"{seen['child_runs']}"
                )

            child_href = next(href for name, href in nested if name == child_stage)
            seen["child_run_id"] = child_href.rstrip("/").rsplit("/", 1)[-1]

            with step("child-run", f"run page of {child_stage!r}, naming its parent run"):
                page.locator(f'{RUN_NAME_CELL} a[href="{child_href}"]').click()
                page.wait_for_url(f"**/runs/{seen['child_run_id']}**")
                page.get_by_role("heading", name=child_stage, exact=True).wait_for()
                # The overview's "About this run" box links back to the parent.
                page.get_by_text("Parent run", exact=True).wait_for()
                page.locator(f'a[href$="/runs/{parent_run_id}"]').first.wait_for()

            manifest_node = page.locator(
                '[data-testid="artifact-tree-node"][artifact-name="manifest.json"]'
            )
            with step("artifacts", f"Artifacts tab of {child_stage!r} listing manifest.json"):
                page.get_by_role("tab", name="Artifacts", exact=True).click()
                manifest_node.wait_for()

            with step("manifest", f"manifest.json of {child_stage!r} shown, naming that stage"):
                manifest_node.click()
                # The viewer renders JSON as syntax-highlighted <pre>; wait for this run's content.
                viewer = page.locator("pre").filter(has_text='"stage"')
                viewer.first.wait_for()
                text = viewer.first.inner_text()
                seen["artifact_text"] = text
                try:
                    manifest = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise AssertionError(
                        f"manifest.json as shown is not JSON ({exc}): {text[:300]!r}"
                    ) from None
                assert manifest.get("stage") == child_stage, (
                    f"manifest.json has stage {manifest.get('stage')!r}, expected {child_stage!r}"
                )
        finally:
            context.close()

    seen["seconds"] = round(time.monotonic() - started, 1)
    return seen
