"""Fault injection for the whole pipeline: real processes, real faults, every event counted.

``python -m chaos`` (``make chaos``) runs the scenarios and prints one row each; see
docs/reliability.md for what they show and a recorded run.
"""
