//! Secret-leak scan over every command, and core-dump checks (issue 8).
