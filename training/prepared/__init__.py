"""Prepared datasets: encoded once into Parquet shards with a manifest, streamed by every epoch.

``writer.prepare_dataset`` writes one, ``reader`` reads it per rank and epoch; ``format`` and
``manifest`` describe the files.
"""
