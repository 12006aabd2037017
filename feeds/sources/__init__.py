"""Upstream adapters: one module and one class per API."""
