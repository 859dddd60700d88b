"""The start engine: plan, order groups, the units (restore, boot, ignore), the ledger, and the guests migrated to a
peer brought back."""
