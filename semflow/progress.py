"""Progress bars: one per named job (`Bars`), and the switch that keeps every bar quiet when stderr is
not a terminal (CI logs get no line per refresh; `SEMFLOW_PROGRESS=1` forces them on, `0` off).

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


def quiet_when_not_a_terminal() -> None:
    """Every tqdm bar of this process disabled unless stderr is a terminal (or SEMFLOW_PROGRESS=1): in a
    CI log each refresh would be a new line. Components pass `disable=not progress`, so the switch is
    applied where the bars are made."""
    import tqdm.std

    if enabled() or getattr(tqdm.std.tqdm.__init__, "_semflow_quiet", False):
        return
    original = tqdm.std.tqdm.__init__

    def init(self, *args, **kwargs):
        kwargs["disable"] = True
        original(self, *args, **kwargs)

    init._semflow_quiet = True
    tqdm.std.tqdm.__init__ = init


class Bars:
    def __init__(self, unit: str = "it"):
        self.unit = unit
        self.bars: dict[str, tqdm] = {}

    def update(self, name: str, done: int, total: int) -> None:
        bar = self.bars.get(name)
        if bar is None:
            bar = self.bars[name] = tqdm(total=total, desc=name, unit=self.unit)
        bar.update(done - bar.n)

    def __enter__(self) -> Bars:
        return self

    def __exit__(self, *exc) -> None:
        for bar in self.bars.values():
            bar.close()
