"""Answering queries: the searcher's stages (searcher) and the relevance that orders and grades
their hits (relevance)."""
