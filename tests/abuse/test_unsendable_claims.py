"""Validly signed tokens whose text or numbers no client could be sent alike: `auth_failed`.

A `sub` holding a lone surrogate (JSON's `"\\ud800"`) cannot be encoded as
UTF-8, so hashing or sending it would fail mid-connection; an `info` holding
NaN or an infinity (`1e400` reads as one) would reach JSON clients as null and
MessagePack clients as NaN. Each is refused like any malformed token, in the
`authenticate` frame and at the upgrade, and the gateway logs no error; a
bystander on the same gateway loses nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest

from tests.abuse.bystander import Bystander
from tests.abuse.doors import answers_at_both_doors
from tests.conftest import SECRET

# Claims written as JSON text, since Python's encoder cannot write every one of them.
ODD_CLAIMS = {
    "surrogate-sub": '"sub": "bob\\ud800"',
    "surrogate-channel-pattern": '"sub": "odd", "channels": ["agent:\\udfff*"]',
    "surrogate-publish-pattern": '"sub": "odd", "publish": ["\\ud800"]',
    "surrogate-info-key": '"sub": "odd", "info": {"\\ud800": 1}',
    "nan-info": '"sub": "odd", "info": {"x": NaN}',
    "infinite-info": '"sub": "odd", "info": {"nested": [{"y": -Infinity}]}',
    "overflowing-info": '"sub": "odd", "info": {"x": 1e400}',
}


def _signed(claims_json: str) -> str:
    def part(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = part(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = part(f'{{{claims_json}, "exp": {int(time.time()) + 600}}}'.encode())
    signature = hmac.new(SECRET.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{part(signature)}"


@pytest.mark.parametrize("claims", list(ODD_CLAIMS.values()), ids=list(ODD_CLAIMS))
async def test_a_claim_clients_cannot_all_be_sent_is_auth_failed_everywhere(
    claims: str,
    make_config: Any,
    gateway_factory: Any,
    connect: Any,
    token: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    running = await gateway_factory(make_config())
    bystander = await Bystander(connect, running.ws_url, token(user="bystander")).start()
    odd = _signed(claims)

    in_frame, at_upgrade = await answers_at_both_doors(connect, running.ws_url, odd)

    assert in_frame == ("error", "auth_failed")
    assert at_upgrade == (401, "auth_failed")
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    await bystander.finish()
    assert not bystander.refused
