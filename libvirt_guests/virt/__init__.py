"""virt."""
