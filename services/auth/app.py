"""The token service's HTTP API.

    GET  /token                   Docker token auth (Basic credentials, or none for anonymous)
    POST /token                   OAuth2: grant_type=password or refresh_token (docs/spec/auth/oauth.md)
    POST /revoke                  revokes one's own refresh token (form token=..., Basic credentials)
    POST /authorize               what the rules grant a Bearer token's account (or anonymous) for scopes
    GET  /.well-known/jwks.json   the public keys tokens are signed with
    GET  /, /_ping, /v1/_ping     liveness; GET /_ready: database and signing key (services.common.health)

Every failure is the registry's JSON error envelope (``services.common.http_errors``, with codes of
``services.common.errors``); ``POST /token`` answers add RFC 6749's ``error``/``error_description``
(``oauth_errors``). Blocking work (bcrypt, SQL) runs in the thread pool.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from services.auth import credentials, health_checks, oauth_errors, params, scopes
from services.auth.challenges import unauthorized
from services.auth.oauth_errors import OAuthRefusal
from services.auth.service import TokenService
from services.auth.tokens import InvalidToken
from services.common import basic_auth, forwarded, health, http_errors, http_instrumentation
from services.common.basic_auth import MalformedCredentials
from services.common.config import Settings
from services.common.errors import (
    BAD_TOKEN_OPTION,
    UNAUTHORIZED,
    UNSUPPORTED_VALUE,
    RegistryError,
)
from services.common.metrics import TOKEN_DENIALS, TOKENS_ISSUED

log = logging.getLogger("berth.auth")

# Token answers must not be cached by anything in between (RFC 6749 section 5.1).
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def create_app(settings: Settings, service: TokenService | None = None) -> FastAPI:
    """The app; building the TokenService first means bad settings stop the process before it listens."""
    tokens = service or TokenService(settings.token_service, settings.cache)
    app = FastAPI(title="Berth token service", docs_url=None, redoc_url=None, openapi_url=None)
    http_errors.install(app, "auth", render=_render)

    health.install(app, "auth", debug=settings.debug, checks=health_checks.checks(tokens))
    forwarded.install(app, settings.http)

    @app.get("/.well-known/jwks.json")
    def jwks() -> JSONResponse:
        return JSONResponse(tokens.keys.jwks(), headers={"Cache-Control": "public, max-age=60"})

    @app.get("/token")
    def get_token(request: Request) -> JSONResponse:
        query = request.query_params
        service = tokens.check_service(query.get("service", ""))
        requested = scopes.parse(query.getlist("scope"))
        offline = params.boolean(query.get("offline_token"), "offline_token")
        client_id = params.client_id(query.get("client_id", ""))
        try:
            creds = basic_auth.parse(request.headers.get("authorization"))
        except MalformedCredentials as exc:
            TOKEN_DENIALS.labels("malformed_credentials").inc()
            raise unauthorized(str(exc), tokens.realm) from None
        account = ""
        if creds is not None:
            claimed = query.get("account", "")
            if claimed and claimed != creds.username:
                raise RegistryError(BAD_TOKEN_OPTION, "account does not match the credentials")
            account = tokens.authenticate(creds.username, creds.password, _address(request))
        grant = tokens.issue(account, service, requested, client_id)
        TOKENS_ISSUED.labels("basic" if account else "anonymous").inc()
        body: dict[str, Any] = {
            "token": grant.token.token,
            "access_token": grant.token.token,
            "expires_in": grant.token.expires_in,
            "issued_at": grant.token.issued_at_rfc3339,
        }
        if offline and account:
            body["refresh_token"] = tokens.refresh_tokens.create(account, service, client_id)
        return JSONResponse(body, headers=NO_STORE)

    @app.post("/token")
    async def post_token(request: Request) -> JSONResponse:
        request.state.oauth = True
        form = await params.read_form(request)
        return await run_in_threadpool(_oauth_token, tokens, form, _address(request))

    @app.post("/revoke")
    async def revoke(request: Request) -> Response:
        form = await params.read_form(request)
        authorization = request.headers.get("authorization")
        return await run_in_threadpool(_revoke, tokens, form, authorization, _address(request))

    @app.post("/authorize")
    async def authorize(request: Request) -> JSONResponse:
        body = await params.read_json(request)
        wanted = body.get("scopes") if isinstance(body, dict) else None
        if not isinstance(wanted, list) or not all(isinstance(s, str) for s in wanted):
            raise RegistryError(UNSUPPORTED_VALUE, 'expected a JSON body {"scopes": ["type:name:actions", ...]}')
        requested = scopes.parse(wanted)
        try:
            raw = credentials.bearer(request.headers.get("authorization"))
            account = tokens.issuer.verify(raw).account if raw is not None else ""
        except (MalformedCredentials, InvalidToken) as exc:
            raise RegistryError(UNAUTHORIZED, str(exc), headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}) from None
        access = await run_in_threadpool(tokens.grant, account, requested)
        return JSONResponse({"account": account, "access": [s.as_claim() for s in access]})

    http_instrumentation.install(app, "auth", settings)
    return app


def _oauth_token(tokens: TokenService, form: params.Form, address: str | None) -> JSONResponse:
    grant_type = params.required(form, "grant_type")
    service = tokens.check_service(params.required(form, "service"))
    client_id = params.client_id(params.required(form, "client_id"))
    access_type = params.first(form, "access_type") or "online"
    if access_type not in ("online", "offline"):
        raise RegistryError(UNSUPPORTED_VALUE, "access_type must be online or offline")
    requested = scopes.parse(form.get("scope", []))
    refresh_token = ""
    if grant_type == "password":
        account = tokens.authenticate(params.required(form, "username"), params.required(form, "password"), address)
        if access_type == "offline":
            refresh_token = tokens.refresh_tokens.create(account, service, client_id)
    elif grant_type == "refresh_token":
        refresh_token = params.required(form, "refresh_token")
        account = tokens.redeem_refresh_token(refresh_token, service, address)
    else:
        raise OAuthRefusal(UNSUPPORTED_VALUE, "grant_type must be password or refresh_token", oauth_error="unsupported_grant_type")
    grant = tokens.issue(account, service, requested, client_id)
    TOKENS_ISSUED.labels(grant_type).inc()
    body: dict[str, Any] = {
        "access_token": grant.token.token,
        "token_type": "Bearer",
        "expires_in": grant.token.expires_in,
        "issued_at": grant.token.issued_at_rfc3339,
        "scope": scopes.scope_string(grant.access),
    }
    if refresh_token:
        body["refresh_token"] = refresh_token
    return JSONResponse(body, headers=NO_STORE)


def _revoke(tokens: TokenService, form: params.Form, authorization: str | None, address: str | None) -> Response:
    """RFC 7009: 200 whether or not the token existed, so the endpoint tells nothing about tokens."""
    try:
        creds = basic_auth.parse(authorization)
    except MalformedCredentials as exc:
        raise unauthorized(str(exc), tokens.realm) from None
    if creds is None:
        raise unauthorized("revoking a refresh token needs its owner's credentials", tokens.realm)
    account = tokens.authenticate(creds.username, creds.password, address)
    token = params.required(form, "token")
    if tokens.refresh_tokens.revoke(token, account):
        log.info("%r revoked a refresh token", account)
    return JSONResponse({}, headers=NO_STORE)


def _address(request: Request) -> str | None:
    """The address failed logins are counted against: behind a trusted proxy (an ingress), the
    forwarded client's, or every client would share the proxy's limit."""
    return forwarded.client_address(request) or None


def _render(request: Request, error: RegistryError) -> Response:
    """The token service's dress of the error envelope: no cache may keep a token answer, a
    refusal included (RFC 6749 section 5.1), and OAuth2 answers name the error RFC 6749's way."""
    body: dict[str, Any] = {"errors": [error.to_json()]}
    if getattr(request.state, "oauth", False):
        body.update(oauth_errors.fields(error))
    return JSONResponse(body, status_code=error.status, headers={**error.headers, **NO_STORE})
