"""The web app: pages and the JSON API under /api/v1, served by `aiscan serve` (FastAPI on uvicorn)."""
