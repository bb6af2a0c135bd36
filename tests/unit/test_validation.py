"""Validation at the edge: ids, PEM file names and actions."""

from __future__ import annotations

import pytest

from amphora_agent import validation
from amphora_agent.errors import InvalidInput

GOOD_IDS = [
    "0fea25e0-f190-4bc0-94ec-e5cd2d8994b6",
    "0FEA25E0-F190-4BC0-94EC-E5CD2D8994B6",
    "0fea25e0f1904bc094ece5cd2d8994b6",
    "a",
    "a" * 64,
]
BAD_IDS = [
    "",
    "..",
    "../etc",
    "a/b",
    "/abs",
    "-rf",
    "-0fea25e0",
    "0fea\x00",
    "0fea\n",
    "0fea\nbeef",
    " 0fea",
    "0fea ",
    "a" * 65,
    "0fea25e0.f190",
    "é0fea",
    "０ｆｅａ",  # fullwidth digits and letters are not hex
    "x",
    "amp1",
    "*",
]


@pytest.mark.parametrize("value", GOOD_IDS)
def test_object_id_accepts_uuid_like(value: str) -> None:
    """Hex and dashes, 1-64 characters, starting with a hex digit, is a valid id."""
    assert validation.object_id(value) == value


@pytest.mark.parametrize("value", BAD_IDS)
def test_object_id_rejects(value: str) -> None:
    """Dots, slashes, a leading dash, NUL, newlines, non-ASCII, non-hex and over-long ids are refused."""
    with pytest.raises(InvalidInput) as caught:
        validation.object_id(value, "loadbalancer")
    assert caught.value.message == "Invalid request"
    assert (caught.value.details or "").startswith("Invalid loadbalancer id")


def test_object_id_details_are_bounded() -> None:
    """A huge id is quoted in the error only in part."""
    with pytest.raises(InvalidInput) as caught:
        validation.object_id("z" * 10_000)
    assert len(caught.value.details or "") < 200


@pytest.mark.parametrize(
    "value",
    [
        "a.pem",
        "43283cf1db2d85bdd8deb823fdad81bcfb28cc30.pem",
        "c776a781-ebd5-44e2-b8e4-5ceee6f15a1a.pem",
        "www.example.com.pem",
        "_x.pem",
        "A-b_c.d.pem",
    ],
)
def test_pem_name_accepts(value: str) -> None:
    """Word characters, dots and dashes ending in .pem are valid names."""
    assert validation.pem_name(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        ".pem",
        "..pem",
        "...pem",
        "a..b.pem",
        ".hidden.pem",
        "-a.pem",
        "a.PEM",
        "apem",
        "a.pem.txt",
        "x.txt",
        "a/b.pem",
        "a\\b.pem",
        "a b.pem",
        "a\x00.pem",
        "a.pem\n",
        "é.pem",
        "a" * 252 + ".pem",
    ],
)
def test_pem_name_rejects(value: str) -> None:
    """Names that are not ``[\\w.-]+\\.pem`` in ASCII, or hold ``..`` or a leading dot/dash, are refused."""
    with pytest.raises(InvalidInput) as caught:
        validation.pem_name(value)
    assert caught.value.message == "Filename has wrong format"
    assert caught.value.details is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [("start", "start"), ("STOP", "stop"), ("Reload", "reload")],
)
def test_action_accepts_case_insensitively(value: str, expected: str) -> None:
    """start, stop and reload in any case are lower-cased."""
    assert validation.action(value) == expected


@pytest.mark.parametrize(
    ("value", "details"),
    [
        ("BOGUS", "Unknown action: bogus"),
        ("haproxy", "Unknown action: haproxy"),
        ("restart", "Unknown action: restart"),
        ("", "Unknown action: "),
    ],
)
def test_action_rejects(value: str, details: str) -> None:
    """Anything else is 'Invalid Request' naming the lower-cased action, as the existing agent says."""
    with pytest.raises(InvalidInput) as caught:
        validation.action(value)
    assert (caught.value.message, caught.value.details) == ("Invalid Request", details)
