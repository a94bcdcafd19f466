"""Error and close codes are spelled once, in neurelay.protocol.codes, and copied exactly.

docs/protocol.md, the browser client (neurelay.js) and its types (neurelay.d.ts)
list them again for their readers; these tests fail when any list differs from
the enums (a code missing, extra, renamed or renumbered). The Python client
spells none of them: it uses the enums and the typed frames.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from neurelay.protocol import frames, server_frames
from neurelay.protocol.codes import CloseCode, ErrorCode

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL_MD = ROOT / "docs" / "protocol.md"
NEURELAY_JS = ROOT / "clients" / "js" / "neurelay.js"
NEURELAY_D_TS = ROOT / "clients" / "js" / "neurelay.d.ts"

ERROR_CODES = [code.value for code in ErrorCode]
CLOSE_CODES = {close.name: close.value for close in CloseCode}


def _section(markdown: str, heading: str) -> str:
    return markdown.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def _between(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0]


def test_protocol_document_lists_exactly_the_error_codes_and_close_codes():
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    errors = re.findall(r"^\| `([a-z_]+)` \|", _section(text, "Error codes"), re.M)
    closes = re.findall(r"^\| (\d+) \|", _section(text, "Close codes"), re.M)
    assert errors == ERROR_CODES
    assert [int(c) for c in closes] == list(CLOSE_CODES.values())


def test_browser_client_lists_exactly_the_error_codes_and_close_codes():
    text = NEURELAY_JS.read_text(encoding="utf-8")
    errors = _between(text, "export const ERROR_CODES = Object.freeze([", "]);")
    closes = _between(text, "export const CLOSE_CODES = Object.freeze({", "});")
    assert re.findall(r'"(\w+)"', errors) == ERROR_CODES
    assert {k: int(v) for k, v in re.findall(r"(\w+): (\d+),", closes)} == CLOSE_CODES


def test_browser_client_types_list_exactly_the_error_codes_and_close_codes():
    text = NEURELAY_D_TS.read_text(encoding="utf-8")
    errors = _between(text, "export type ErrorCode =", ";")
    closes = _between(text, "export declare const CLOSE_CODES: Readonly<{", "}>;")
    assert re.findall(r'"(\w+)"', errors) == ERROR_CODES
    assert {k: int(v) for k, v in re.findall(r"(\w+): (\d+);", closes)} == CLOSE_CODES


def test_python_client_spells_no_frame_type_and_no_error_code():
    spelled_elsewhere = set(ERROR_CODES) | set(frames._FIELDS) | set(server_frames._BUILDERS)
    found = []
    for path in sorted((ROOT / "neurelay" / "client").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in spelled_elsewhere:
                found.append(f"{path.name}:{node.lineno}: {node.value!r}")
    assert found == []
