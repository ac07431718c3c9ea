"""The audit trail: event catalogue, hash-chained log, search."""
