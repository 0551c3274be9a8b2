"""The Milvus engine: an index in Milvus collections, embedded (Milvus Lite: a local path ending in
.db) or on a Milvus server or cluster (http(s)://host:port).

An index is a state collection and, per build, four more (NAME is the index's collection name):

- NAME_state: one row, the commit point: the generation searches read, the build they read it in,
  the model, the chunker, the counts and the id counters. Upserting it publishes a change.
- NAME_bN_passages: a row per passage: its stable id, text, the terms BM25 scores (indexer/
  keyword.py: passage_terms, pre-analysed, so both engines score the same words) and the sparse
  vector Milvus's BM25 function makes of them, the dense vector, the article metadata the filters
  use, sentence spans, near-duplicate signature, and `born` / `died`: the generation that added it
  and the one that replaced or deleted it. A search at generation G reads born <= G < died.
- NAME_bN_sentences: each passage's sentence vectors (for marking the answer), keyed by passage.
- NAME_bN_terms: each term's document frequency (for the share of a query's keyword weight that
  a passage holds), as of the write that last changed it and before it.
- NAME_bN_documents: the documents as kept (their text in parts), with born / died.

A change adds rows born at the next generation and marks the rows it replaces as dying there, then
flushes and commits the state: until that upsert, searches see none of it, so a failed write
changes nothing a search sees, and the next writer removes what a failed one left. A full rebuild
(or another model) writes a new build's collections and switches the state to them. Dense and
BM25 lists come from Milvus, filtered inside the engine; fusion, relevance, grouping, highlighting,
facets and collapse stay in search.py, so a query ranks the same way on every engine.
"""

