"""The seed's demo: its schema and sample data, the web API ``serve --demo`` adds, and the page."""
