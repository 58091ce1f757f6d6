"""Alembic environment and versions for the aiscan schema (SQLite and PostgreSQL)."""
