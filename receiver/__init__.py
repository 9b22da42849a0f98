"""HTTP in: the Starlette ingress that keeps each delivery in Redis before it answers."""
