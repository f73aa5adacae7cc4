"""What every config section shares: unknown keys are errors, values are frozen."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    """A preset or override that does not validate; the message names the file and key path."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
