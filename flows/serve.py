"""Serve the ingest flows as deployments, so the watcher and the Prefect UI can start runs."""

from __future__ import annotations

from prefect import serve

from flows.ingest import ingest_batch, ingest_document
from kiroku.config import usable_cpu_count

DEPLOYMENT_NAME = "kiroku"


def serve_flows() -> None:
    """Run until stopped; at most one document per core is read at a time."""
    limit = usable_cpu_count()
    serve(
        ingest_document.to_deployment(name=DEPLOYMENT_NAME, tags=["kiroku"],
                                      description="Archive one scan from the inbox."),
        ingest_batch.to_deployment(name=DEPLOYMENT_NAME, tags=["kiroku"],
                                   description="Archive many scans, one ingest-document run each."),
        limit=limit,
        print_starting_message=False,
    )
