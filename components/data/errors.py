"""The one exception type raised by ``components.data`` for bad input.

Usage::

    from components.data.errors import DataError
    try:
        build_prompts(source, split_cfg)
    except DataError as err:
        print(err)  # e.g. "data/prompts.jsonl:3: invalid JSON: Expecting value ..."

It subclasses ValueError so callers that already treat ValueError as "bad user input" (config
loading, CLI argument errors) keep working without knowing about this package.
"""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data: the message names the file or dataset, the record position and the field."""
