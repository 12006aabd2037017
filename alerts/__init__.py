"""hashwatch middle layer: rules, the alert engine, and delivery. Never imports Textual."""
