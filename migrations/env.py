"""Alembic environment: deltastore hands over an open connection.

deltastore/catalog/migrate.py puts the SQLAlchemy connection it already holds
(inside the store's lock) in ``config.attributes["connection"]``; there is no
alembic.ini and no offline mode.
"""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, render_as_batch=True, transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
