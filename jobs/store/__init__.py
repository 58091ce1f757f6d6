"""SQL storage: ORM models, engine and sessions, schema migrations."""
