"""API keys: ``Authorization: Bearer <key>``. Keys are stored as SHA-256 digests (``service.config``); a request's
key is hashed and looked up, and the owner it maps to scopes every job operation."""

from __future__ import annotations

import hmac

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.api.errors import ApiError
from service.config import hash_api_key
from service.errors import ErrorCode

bearer_scheme = HTTPBearer(auto_error=False, description="an API key issued by the operator")


def owner_for_key(owners: dict[str, str], key: str) -> str | None:
    """The owner of ``key`` given ``{digest: owner}``, comparing digests in constant time."""
    digest = hash_api_key(key)
    found = None
    for stored, owner in owners.items():
        if hmac.compare_digest(stored, digest):
            found = owner
    return found


def require_owner(request: Request, credentials: HTTPAuthorizationCredentials | None = Security(bearer_scheme)) -> str:
    """FastAPI dependency: the owner of the request's API key, or 401."""
    if credentials is None or not credentials.credentials:
        message = "an API key is required: 'Authorization: Bearer <key>'"
        raise ApiError(401, ErrorCode.UNAUTHORIZED, message, {"WWW-Authenticate": "Bearer"})
    owner = owner_for_key(request.app.state.api_key_owners, credentials.credentials)
    if owner is None:
        headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        raise ApiError(401, ErrorCode.UNAUTHORIZED, "unknown API key", headers)
    return owner
