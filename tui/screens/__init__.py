"""Screens pushed over the dashboard: help and the silence chooser."""

from tui.screens.help import HelpScreen
from tui.screens.silence import SilenceScreen

__all__ = ["HelpScreen", "SilenceScreen"]
