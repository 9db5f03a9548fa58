"""Defaults shared by the CLI and the code behind it, in a module that imports nothing, so
``bookwatch --help`` can show them without loading the capture or stream code."""

DEFAULT_CHANNEL = "booking_changes"
# The demo's tables (``init-demo``): what ``install-triggers`` captures when given no --table.
DEFAULT_TABLES = ("bookings", "guests", "rooms")
