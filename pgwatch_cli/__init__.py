"""bookwatch: real-time change events from PostgreSQL for people editing the same data."""

__version__ = "0.1.0"
