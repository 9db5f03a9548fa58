"""Events out of the database: the wire format, filters, the listener (ChangeStream), the Hub,
and the wal relay (WAL -> change log: pgoutput frames, replication stream, append, leadership)."""
