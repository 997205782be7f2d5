"""The base of every settings group: frozen, and unknown keys are errors."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SettingsGroup(BaseModel):
    """A nested group of ``Settings``; an adopter's own groups derive from it too."""

    model_config = ConfigDict(frozen=True, extra="forbid")
