"""Dashboard panels, one per module."""
