"""hashwatch's bottom layer: feed adapters, the event bus, the store and the metrics math.

Never imports Textual or apprise (checked by import-linter and tests/test_layering.py).
"""

__version__ = "0.1.0"
