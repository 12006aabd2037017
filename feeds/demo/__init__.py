"""Offline demo: local servers that speak the upstream protocols and replay real history."""
