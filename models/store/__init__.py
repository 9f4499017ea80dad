"""Storage: the tables, transactions (retries, SQLite's turns, the loop-thread session) and the inbox.
May import: SQLAlchemy and its drivers; nothing else of the core."""
