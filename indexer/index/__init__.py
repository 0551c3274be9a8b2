"""The index as callers see it: the seam every engine implements (engine), building and
updating it (build, progress, the embedding cache), repairing it, and the index folder's own files
(folder, durable)."""
