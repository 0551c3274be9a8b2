"""The FAISS segments engine: immutable segments in the index folder, generations listing them.

engine.py is the Engine (what the seam opens); store.py keeps generations, the CURRENT pointer and
checksums; segment.py and segments.py read, writer.py writes, merge.py merges small segments,
damage.py finds and repairs damage; dense.py (FAISS), postings.py (BM25) and rowfile.py are a
segment's files. Nothing outside this package imports it: callers go through indexer/index/engine.py.
"""
