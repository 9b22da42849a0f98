"""The operator console: `uphooks console`, a web app on the pipeline's Redis."""
