"""Pure sync rules: content hashing, field diffs, retry schedules. No I/O is imported here."""
