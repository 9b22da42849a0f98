"""An example uphooks handler plugin (see handlers.py)."""
