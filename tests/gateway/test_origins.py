"""Origins are compared as scheme, host and port, never globbed as text."""

from __future__ import annotations

import pytest

from neurelay.gateway.origins import Origin, allowed, parse_origin

WILDCARD = ["https://*.example.com"]


@pytest.mark.parametrize(
    "origin",
    ["https://app.example.com", "https://a.b.example.com", "https://APP.Example.com:443"],
)
def test_a_subdomain_wildcard_allows_subdomains_on_the_same_scheme_and_port(origin):
    assert allowed(origin, WILDCARD)


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.com/.example.com",
        "https://evil.com?.example.com",
        "https://evil.com#.example.com",
        "https://evil.com\\.example.com",
        "https://user@app.example.com",
        "https://example.com",
        "https://app.example.com.evil",
        "https://appexample.com",
        "http://app.example.com",
        "https://app.example.com:8443",
        "wss://app.example.com",
        "null",
        "",
        "https://app.example.com:99999",
        "https://-bad.example.com",
    ],
)
def test_a_subdomain_wildcard_refuses_everything_else(origin):
    assert not allowed(origin, WILDCARD)


def test_an_exact_pattern_matches_only_its_origin_with_the_default_port_filled_in():
    assert allowed("https://app.example.com", ["https://app.example.com:443"])
    assert not allowed("https://app.example.com/", ["https://app.example.com"])
    assert not allowed("https://other.example.com", ["https://app.example.com"])


def test_a_port_wildcard_allows_any_port_of_that_scheme_and_host():
    patterns = ["http://localhost:*"]
    assert allowed("http://localhost:3000", patterns)
    assert allowed("http://localhost", patterns)
    assert not allowed("https://localhost:3000", patterns)
    assert not allowed("http://localhost.evil:3000", patterns)


def test_star_alone_allows_any_origin_and_a_malformed_pattern_allows_none():
    assert allowed("null", ["*"])
    assert not allowed("https://app.example.com", ["app.example.com", "https://*evil"])


def test_ip_literals_are_origins_too():
    assert parse_origin("http://[::1]:8080") == Origin("http", "::1", 8080)
    assert allowed("http://127.0.0.1:8080", ["http://127.0.0.1:8080"])
