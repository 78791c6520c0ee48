"""The `jobkit` command line: worker, status, dlq, check."""
