"""Entry points: the REST API, the command line, logging, and the composition root."""
