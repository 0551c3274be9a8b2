"""Following news feeds (`semsearch follow`, SEMSEARCH_FEEDS): follow.py reads feeds and their
pages into the index; every request goes out through fetcher.py, under the rules of
fetch_policy.py (which origins and addresses may be fetched)."""
