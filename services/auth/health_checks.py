"""The token service's readiness checks (``/_ready``; see ``services.common.health``).

- ``database``: ``SELECT 1`` on the user and refresh-token database; without it no login works.
- ``signing_key``: a throwaway token signed with the loaded key verifies with its published public
  key, so the service can issue tokens that gateways accept (cheap: well under a millisecond).
"""

from __future__ import annotations

import jwt

from services.auth.service import TokenService
from services.common import health


def checks(tokens: TokenService) -> list[health.Check]:
    async def signing_key() -> None:
        signing = tokens.keys.signing
        try:
            probe = jwt.encode({"probe": "readiness"}, signing.private, algorithm=signing.public.alg)
            jwt.decode(probe, signing.public.key, algorithms=[signing.public.alg])
        except jwt.PyJWTError as exc:
            raise health.CheckFailed(f"the signing key cannot sign verifiable tokens ({type(exc).__name__})") from None

    return [health.Check("database", health.sql_check(tokens.engine)), health.Check("signing_key", signing_key)]
