"""Validly signed tokens whose time claims are not times: `auth_failed`, never `token_expired`.

`exp: true` must not be read as 1, nor `exp: -5` as a time long past: a
client told `token_expired` would fetch a fresh token and try again, while the
issuer's token is simply malformed. Refused alike in the `authenticate` frame
and at the upgrade; a bystander on the same gateway loses nothing.
"""

from __future__ import annotations

from typing import Any

import jwt
import pytest

from tests.abuse.bystander import Bystander
from tests.abuse.doors import answers_at_both_doors
from tests.conftest import SECRET

ODD_CLAIMS = [{"exp": True}, {"exp": False}, {"exp": -5}, {"exp": -0.5}, {"nbf": True}]


def _signed(claims: dict[str, Any]) -> str:
    return jwt.encode({"sub": "odd", "exp": 4_000_000_000, **claims}, SECRET, algorithm="HS256")


@pytest.mark.parametrize("claims", ODD_CLAIMS, ids=repr)
async def test_a_time_claim_that_is_a_boolean_or_negative_is_auth_failed_everywhere(
    claims: dict[str, Any], make_config: Any, gateway_factory: Any, connect: Any, token: Any
) -> None:
    running = await gateway_factory(make_config())
    bystander = await Bystander(connect, running.ws_url, token(user="bystander")).start()
    odd = _signed(claims)

    in_frame, at_upgrade = await answers_at_both_doors(connect, running.ws_url, odd)

    assert in_frame == ("error", "auth_failed")
    assert at_upgrade == (401, "auth_failed")
    await bystander.finish()
    assert not bystander.refused
