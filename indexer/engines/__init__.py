"""The index engines behind the seam (indexer/engine.py): each in its own package or module,
imported only when chosen."""
