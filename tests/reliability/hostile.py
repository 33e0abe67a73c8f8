"""Hostile values for the ids that go into URL paths and for ``on_behalf_of``, which goes into a header."""

from __future__ import annotations

# Each one must be refused by the hook's validation before a request is sent.
HOSTILE_IDS: dict[str, str] = {
    "empty": "",
    "space": " ",
    "tab": "\t",
    "leading-space": " batch_abc",
    "trailing-newline": "batch_abc\n",
    "inner-space": "batch abc",
    "dot": ".",
    "dotdot": "..",
    "traversal": "../files",
    "deep-traversal": "../../../etc/passwd",
    "traversal-after-id": "batch_abc/../../files",
    "slash": "batch_abc/cancel",
    "backslash-traversal": "..\\..\\windows",
    "encoded-slash": "batch_abc%2Fcancel",
    "encoded-slash-lower": "batch_abc%2fcancel",
    "encoded-dotdot": "%2e%2e",
    "encoded-traversal": "%2e%2e%2Ffiles",
    "double-encoded": "%252e%252e%252Ffiles",
    "query": "batch_abc?limit=100",
    "fragment": "batch_abc#x",
    "crlf": "batch_abc\r\nX-Injected: 1",
    "lf": "batch_abc\nHost: evil",
    "cr": "batch_abc\r",
    "nul": "batch_abc\x00",
    "nul-inside": "batch\x00abc",
    "control-char": "batch\x1babc",
    "very-long": "batch_" + "a" * 10_000,
    "non-ascii-latin": "bätch_abc",
    "non-ascii-cjk": "批次_abc",
    "emoji": "batch_\U0001f4a5",
    "division-slash": "batch\u2215abc",
    "fullwidth-solidus": "batch\uff0fabc",
    "fraction-slash": "batch\u2044abc",
    "fullwidth-dots": "\uff0e\uff0e",
    "zero-width-space": "batch\u200babc",
    "rtl-override": "batch\u202eabc",
    "url": "https://evil.example/x",
    "at-sign-authority": "@evil.example",
    "colon": "batch:abc",
    "percent": "batch%abc",
}

# on_behalf_of travels as the X-On-Behalf-Of header: what breaks or smuggles a header must be refused.
HOSTILE_ON_BEHALF_OF: dict[str, str] = {
    "empty": "",
    "space": " ",
    "whitespace-only": " \t ",
    "crlf": "user-1\r\nX-Injected: 1",
    "lf": "user-1\nAuthorization: Bearer stolen",
    "cr": "user-1\r",
    "nul": "user-1\x00",
    "control-char": "user\x07-1",
    "del-char": "user\x7f-1",
    "very-long": "user-" + "u" * 10_000,
    "non-ascii-latin": "usér-1",
    "non-ascii-cjk": "用户-1",
    "emoji": "user-\U0001f600",
    "zero-width-space": "user\u200b-1",
    "rtl-override": "user\u202e-1",
    "line-separator": "user\u2028-1",
    "leading-space": " user-1",
    "trailing-space": "user-1 ",
}

# Look alike enough to the hostile ones to show that validation does not refuse everything.
VALID_IDS = ["batch_abc123", "batch-abc123", "file-abc123", "file_abc123", "0", "A" * 128]
VALID_ON_BEHALF_OF = ["user-1", "user_1", "tenant:42/user:7", "a" * 128, "user@example.com"]
