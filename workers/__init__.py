"""Celery workers: routing, idempotency, retries, dead letters."""
