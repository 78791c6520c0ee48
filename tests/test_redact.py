"""Redaction: no password or secret ever appears in a redacted URL, wherever it was nested."""

from __future__ import annotations

from urllib.parse import quote, unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobkit.redact import redact_text, redact_url

# Secrets of any printable ASCII, with an upper-case letter (the URL skeletons below have none,
# so a secret found in the output can only have leaked).
secrets = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=6, max_size=24
).filter(lambda s: any(c.isupper() for c in s))
users = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)
hosts = st.sampled_from(["h", "127.0.0.1:6379", "broker.internal:5672", "[::1]:6379"])
schemes = st.sampled_from(["redis", "rediss", "amqp", "celery+redis", "celery+amqp", "http"])


def enc(text: str) -> str:
    return quote(text, safe="")


def fully_decoded(text: str) -> str:
    for _ in range(10):
        text = unquote(text)
    return text


def assert_hidden(secret: str, url: str) -> None:
    out = redact_url(url)
    for shown in (out, fully_decoded(out), redact_text(f"could not connect to {url}: refused")):
        assert secret not in shown, (url, out)
        assert enc(secret) not in shown, (url, out)


@given(scheme=schemes, user=users, secret=secrets, host=hosts)
def test_password_in_userinfo_is_hidden(scheme: str, user: str, secret: str, host: str) -> None:
    assert_hidden(secret, f"{scheme}://{user}:{enc(secret)}@{host}/0")
    assert_hidden(secret, f"{scheme}://:{enc(secret)}@{host}/0")


@given(scheme=schemes, secret=secrets, host=hosts)
def test_userinfo_without_a_colon_is_hidden(scheme: str, secret: str, host: str) -> None:
    assert_hidden(secret, f"{scheme}://{enc(secret)}@{host}/0")


@given(
    outer=schemes,
    inner=schemes,
    secret=secrets,
    host=hosts,
    encodings=st.integers(min_value=0, max_value=3),
    option=st.sampled_from(["store", "result_backend", "x"]),
)
def test_url_nested_in_a_query_value_has_its_password_hidden(
    outer: str, inner: str, secret: str, host: str, encodings: int, option: str
) -> None:
    nested = f"{inner}://:{enc(secret)}@{host}/0"
    for _ in range(encodings):
        nested = enc(nested)
    assert_hidden(secret, f"{outer}://u:p@{host}/0?a=1&{option}={nested}&b=2")
    assert_hidden(secret, f"sqs://?{option}={nested}")


@given(secret=secrets, depth=st.integers(min_value=1, max_value=4))
def test_urls_nested_several_levels_deep_have_their_passwords_hidden(
    secret: str, depth: int
) -> None:
    url = f"redis://:{enc(secret)}@h/0"
    for _ in range(depth):
        url = f"sqs://?store={enc(url)}"
    assert_hidden(secret, url)


@given(
    secret=secrets,
    name=st.sampled_from(
        ["password", "aws_secret_access_key", "token", "api_key", "sas_key", "auth", "passwd"]
    ),
)
def test_secret_named_query_values_are_hidden(secret: str, name: str) -> None:
    assert_hidden(secret, f"sqs://eu-west-1?region=eu&{name}={enc(secret)}")


@given(secret=secrets)
def test_fragment_is_hidden(secret: str) -> None:
    assert_hidden(secret, f"redis://h/0#{enc(secret)}")
    assert_hidden(secret, f"redis://h/0#password={enc(secret)}")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqs://?store=redis://:secret@host/0", "sqs://?store=redis://:***@host/0"),
        (
            "celery+redis://u:p@h/0?store=redis%3A%2F%2F%3Asecret%40h",
            "celery+redis://u:***@h/0?store=redis://:***@h",
        ),
        ("redis://secret@h/0", "redis://***@h/0"),
        ("sqlite:////abs/jobs.db?keys_ttl=1h", "sqlite:////abs/jobs.db?keys_ttl=1h"),
        (
            "sqs://eu?endpoint_url=http://127.0.0.1:5000",
            "sqs://eu?endpoint_url=http://127.0.0.1:5000",
        ),
    ],
)
def test_redacted_url_keeps_everything_that_is_not_secret(url: str, expected: str) -> None:
    assert redact_url(url) == expected
