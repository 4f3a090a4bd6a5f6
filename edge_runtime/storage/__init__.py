"""SQLite state: the schema and connections (db.py) and every SQL statement (repositories.py)."""
