"""The gpujobs service: FastAPI app, hub auth, routes, metrics."""
