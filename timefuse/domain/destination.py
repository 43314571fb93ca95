"""The canonical name of a receiver: per-destination limits and breakers are keyed on it."""

from __future__ import annotations

from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def destination_key(delivery_type: str, destination: str) -> str:
    """``host:port`` for an http(s) URL (lower-case host, default port explicit); for any
    other destination (a topic, a path) the delivery type and the destination."""
    if "://" in destination:
        parts = urlsplit(destination)
        host = (parts.hostname or "").lower()
        try:
            port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
        except ValueError:
            port = None
        if host:
            host = f"[{host}]" if ":" in host else host
            return f"{host}:{port}" if port else host
    return f"{delivery_type}:{destination}"
