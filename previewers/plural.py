"""Counts in messages: "1 channel", "2 channels", "1 entry", "2 entries"."""


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {nouns or noun + 's'}"
