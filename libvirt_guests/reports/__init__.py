"""What the read-only commands show: status, gueststatus and the plans (`plan stop`, `plan start`)."""
