"""The one exception type raised by ``components.cade`` for bad input.

Usage::

    from components.cade.errors import CadeError
    try:
        align({"news": news_sentences}, settings)
    except CadeError as err:
        print(err)  # "CADE needs at least 2 slices to align, got 1: news"

It subclasses ValueError so callers that treat ValueError as "bad user input" (config loading, CLI
arguments) keep working without knowing about this package. Every message names the slice and/or word
it is about.
"""

from __future__ import annotations


class CadeError(ValueError):
    """Bad input to CADE: the message names the slice, word or setting at fault."""
