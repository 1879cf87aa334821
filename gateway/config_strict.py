"""The base of every config model: unknown keys are errors, values are frozen; shared field types."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
Name = Annotated[str, Field(pattern=NAME_PATTERN, min_length=1, max_length=48)]
Port = Annotated[int, Field(ge=1, le=65535)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
