"""Offline jobs that need both training/ and service/: export-training, purge-events, the report CLI."""
