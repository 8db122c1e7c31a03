"""The HTTP API: a FastAPI app over the core objects (see `app.create_app`)."""
