"""The configuration: the variables' table (settings), the commands and exit codes (commands), the file read as sh
would (shellfile), loading (load), its problems, check-config, per-guest policy and whose defaults apply (flavour)."""
