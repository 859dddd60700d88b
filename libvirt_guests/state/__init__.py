"""Files that outlive one run: the list file (the original's format), the
state journal beside it, the 'started' lock file and the run lock.

Every write is atomic (temporary file in the same directory, fsync, rename,
fsync of the directory), but for the journal's event log, which is appended
to (a record torn by a crash is ignored: see the journal's section), and no
path is followed through a symlink, because the lock file lives in a
world-writable directory (/run/lock).

What a run finds is never a reason to leave guests unhandled: a state file
that is damaged, written by a newer version, a symbolic link or someone
else's is renamed aside (NAME.damaged-STAMP, NAME.untrusted-STAMP) with one
line saying so, and the run goes on as if it were absent; junk in the list
file is dropped word by word; whatever sits at the lock path is replaced or
reported, never fatal."""
