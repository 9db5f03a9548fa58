"""Events out of the database: the wire format, filters, the listener (ChangeStream) and the Hub."""
