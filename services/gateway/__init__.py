"""The registry HTTP API (FastAPI): routing, validation, negotiation, errors."""
