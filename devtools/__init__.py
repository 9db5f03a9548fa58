"""Development-time tools, not shipped in the wheel: generators for files kept in the repo."""
