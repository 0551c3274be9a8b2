"""Articles as text: reading files and pages (documents), splitting them into passages
(chunking), their metadata, keyword analysis (keyword) and near-duplicate signatures (neardup)."""
