"""Adapters to the operating system itself."""
