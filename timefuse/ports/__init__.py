"""Ports: the interfaces the service is written against. One module per port."""
