"""Change capture in the database: SQL scripts, table names, installing/removing triggers."""
