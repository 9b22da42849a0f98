"""Shared contracts of the pipeline: settings, event models and their catalogue, Redis key names,
errors, the Redis connection, the message protocol, webhook signatures, and what the ingress,
workers and handlers genuinely share.
Nothing here imports receiver/, workers/, handlers/ or the tooling (tests/test_layers.py)."""
