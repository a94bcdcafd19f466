"""Writes docs/configuration.md from GatewayConfig, so the reference cannot drift from the code.

Run `python -m neurelay.configdoc > docs/configuration.md`; a test fails when
the committed file differs from what this prints.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from neurelay.config import ENV_PREFIX, RESTART_SECTIONS, GatewayConfig

_RESTART = ", ".join(f"`{s}`" for s in sorted(RESTART_SECTIONS))
_HEADER = f"""# Gateway configuration reference

`neurelay gateway --config FILE` reads a YAML or JSON file with the sections
below; every field is optional. Environment variables override the file:
`{ENV_PREFIX}<SECTION>__<FIELD>`, e.g. `{ENV_PREFIX}LIMITS__MESSAGES_PER_SECOND=200`
(lists and objects as JSON, e.g. `{ENV_PREFIX}ALLOWED_ORIGINS='["https://*.example.com"]'`).

The gateway re-reads the file every `reload_interval_seconds` and applies a
changed one to running connections without a restart: limits, namespaces,
allowed origins, authentication keys. Changes to
{_RESTART} are logged and apply at the next start. A file that
does not validate is logged and ignored; the running configuration stays.

This page is generated from `neurelay/config.py` by `python -m neurelay.configdoc`.
"""


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value: Any = field.default_factory()  # type: ignore[call-arg]
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "see below"
    if isinstance(value, dict):
        return ", ".join(f"`{k}`" for k in value) or "`{}`"
    return f"`{json.dumps(value)}`"


def _rows(model: type[BaseModel]) -> list[str]:
    rows = ["| field | default | meaning |", "|---|---|---|"]
    for name, field in model.model_fields.items():
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{name}` | {_default(field)} | {description} |")
    return rows


def render() -> str:
    lines = [_HEADER, "## Top level", "", *_rows(GatewayConfig), ""]
    for name, field in GatewayConfig.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines += [f"## `{name}`", "", *_rows(annotation), ""]
    namespace_model = GatewayConfig.model_fields["namespaces"].annotation.__args__[1]  # type: ignore[union-attr]
    lines += [
        "## `namespaces.<name>`",
        "",
        "Each key is a namespace (`[a-z][a-z0-9-]{0,31}`, or `system`); giving `namespaces`",
        "replaces the default set.",
        "",
        *_rows(namespace_model),
        "",
        "Defaults: "
        + ", ".join(
            f"`{name}` {settings.history_messages} messages"
            for name, settings in GatewayConfig().namespaces.items()
        )
        + ".",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
