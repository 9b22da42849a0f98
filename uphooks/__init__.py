"""Shared contracts of the pipeline (settings, event models, Redis key names) and the CLI."""
