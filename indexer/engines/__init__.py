"""The index engines behind the seam (indexer/index/engine.py): each in its own package, imported only
when chosen. This registry is all that anything outside the seam may read here: the command
line's choices and the settings' type come from it."""

# Engines by name: "module:class", imported only when chosen (SEMSEARCH_ENGINE, --engine).
ENGINES = {"faiss": "indexer.engines.faiss.engine:FaissEngine", "milvus": "indexer.engines.milvus.engine:MilvusEngine"}
ENGINE_NAMES = tuple(ENGINES)
