"""How log lines look."""

from __future__ import annotations

from typing import Literal

from settings.group import SettingsGroup


class LoggingSettings(SettingsGroup):
    """How log lines look."""

    format: Literal["json", "console"] = "console"
    level: Literal["debug", "info", "warning", "error"] = "info"
