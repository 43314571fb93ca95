"""Plugins: hook specifications, loading, and the built-in delivery types."""
