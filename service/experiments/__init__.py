"""Experiments: definitions, the store and its audit, admin changes, the sticky A/B router, sync."""
