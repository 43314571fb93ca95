"""The REST API (v1): Starlette routes over :class:`~timefuse.service.events.EventService`,
built by :func:`timefuse.entrypoints.api.app.create_app`. Nothing is imported here: a process
that serves only /health and /metrics (``dispatch``, ``ingest``) imports the probes' modules,
not the API's and the console's."""
