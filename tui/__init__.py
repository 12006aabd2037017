"""hashwatch top layer: the CLI and the Textual dashboard."""
