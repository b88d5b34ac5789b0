"""What comes from PostgreSQL: the LISTEN thread, decoding notifications, every SQL
statement, and database URLs."""
