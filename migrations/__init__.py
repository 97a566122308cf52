"""Alembic revisions of the catalog schema (shipped as ``deltastore.migrations``)."""
