import pytest

from nea import format_size, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (1024, 1024),
        ("1024", 1024),
        ("512KiB", 512 * 1024),
        ("64 MiB", 64 * 1024**2),
        ("1.5GiB", int(1.5 * 1024**3)),
        ("64M", 64 * 1024**2),
        ("8k", 8 * 1024),
        ("100MB", 100_000_000),
        ("100kB", 100_000),
        ("100KB", 100_000),
        ("0", 0),
    ],
)
def test_parse_size_accepts_documented_forms(text: int | str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "-1", -5, "12 parsecs", "1.2.3M", "10mb", True, None])
def test_parse_size_rejects_everything_else_naming_the_forms(text: object) -> None:
    with pytest.raises(ValueError, match="KiB/MiB/GiB"):
        parse_size(text)  # type: ignore[arg-type]


def test_format_size_uses_binary_units() -> None:
    assert format_size(512) == "512 B"
    assert format_size(16 * 1024**2) == "16.0 MiB"
    assert format_size(1536) == "1.5 KiB"
    assert format_size(3 * 1024**3) == "3.0 GiB"
    assert format_size(1024**2 - 1) == "1.0 MiB"
    assert format_size(1023 * 1024) == "1023.0 KiB"


def test_parse_size_remembers_texts_but_not_failures() -> None:
    # Per-request code parses the same text again and again: it is parsed once.
    from nea._sizes import _parse_text

    _parse_text.cache_clear()
    assert [parse_size("16MiB") for _ in range(3)] == [16 * 1024**2] * 3
    assert _parse_text.cache_info().hits == 2
    for _ in range(2):  # a malformed size fails every time
        with pytest.raises(ValueError, match="KiB/MiB/GiB"):
            parse_size("16 parsecs")
    assert _parse_text.cache_info().currsize == 1
