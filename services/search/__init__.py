"""The search service (``berth search``): an index of repositories fed by registry events.

app.py       the HTTP API: POST /events, GET /v1/search
database.py  engines for SQLite and PostgreSQL, and their transactions
schema.py    the tables and the schema version (migrated on start)
index.py     what the index stores per repository, and the writes events make
ranking.py   one page of results, best first, without sorting every match
textmatch.py substring matching and its trigram indexes (FTS5, pg_trgm)
describe.py  an image's description, read from its manifest and config
events.py    notification envelopes applied to the index
reindex.py   the index rebuilt from a registry's catalog
backends.py  a custom index instead (search_backend: a module path): its interface and loading
"""
