"""The base of every section model of the params file (`restem.schemas.params`, `restem.schemas.loop`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):  # unknown keys are errors (typos); values are frozen
    model_config = ConfigDict(extra="forbid", frozen=True)
