"""`make bench`: ingress and workers beside their baselines (docs/performance.md)."""
