"""The authenticated GET /api/export endpoint (contract §3): HTTP and auth only, then the same
document builder and encoder as the command line."""
