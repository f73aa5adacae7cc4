"""Progress bars for long work, one per named job, quiet when stderr is not a terminal (CI logs get
no line per refresh; `SEMFLOW_PROGRESS=1` forces them on, `0` off).

Usage::

    with Bars(unit="word") as bars:
        align(slices, settings, progress=bars.update)     # update(name, done, total)
"""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def enabled() -> bool:
    forced = os.environ.get("SEMFLOW_PROGRESS")
    if forced is not None:
        return forced not in ("0", "false", "")
    return sys.stderr.isatty()


class Bars:
    def __init__(self, unit: str = "it"):
        self.unit = unit
        self.bars: dict[str, tqdm] = {}

    def update(self, name: str, done: int, total: int) -> None:
        bar = self.bars.get(name)
        if bar is None:
            bar = self.bars[name] = tqdm(total=total, desc=name, unit=self.unit, disable=not enabled())
        bar.update(done - bar.n)

    def __enter__(self) -> Bars:
        return self

    def __exit__(self, *exc) -> None:
        for bar in self.bars.values():
            bar.close()
