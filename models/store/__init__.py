"""Storage: the tables, transactions (retries, SQLite's turns, the loop-thread session) and the inbox of handled updates.
May import: SQLAlchemy and its drivers; nothing else of the core."""
