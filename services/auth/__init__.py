"""The token service (``berth auth``): Docker token authentication for the registry.

Clients that get a ``401`` with ``WWW-Authenticate: Bearer realm=...,service=...,scope=...`` from the
gateway ask this service for a token (``GET /token`` with Basic credentials, or the OAuth2
``POST /token``). It authenticates them against the user stores, grants the intersection of what
they asked for and what the access rules allow, and signs a short-lived JWT the gateway (or the
reference Go registry) verifies with the published keys.

Modules, one job each:

- ``keys``: the signing key (generated on first start), its certificate, key IDs, the JWKS.
- ``scopes``: the scope grammar of the token spec.
- ``rules``: the ordered access rules (YAML) and what they grant.
- ``passwords``: bcrypt hashing and the constant-cost check; ``user_store`` is the store interface,
  ``htpasswd`` and ``user_table`` its two implementations, ``users`` the composite of both the
  service asks; ``database`` the SQL tables.
- ``tokens``: signing and verifying access tokens; ``refresh_tokens``: the opaque, revocable ones.
- ``ratelimit``: failed logins per account and per address.
- ``credentials``: reading a Bearer token without trusting it (Basic credentials, and the
  htpasswd file, are read by ``services.common.basic_auth`` and ``services.common.htpasswd``).
- ``challenges``: the refusals of a login (401 asking for Basic credentials, 429 with Retry-After);
  ``oauth_errors``: RFC 6749's names for the registry's error codes (the codes themselves are
  ``services.common.errors``, answered by ``services.common.http_errors``).
- ``service``: the decisions (who is asking, what they get); ``app``: HTTP around them.
"""
