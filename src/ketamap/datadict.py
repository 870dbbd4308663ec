"""Render the data dictionary (docs/data_dictionary.md) from the schema files."""

from __future__ import annotations

from ketamap.schemas import load_columns, load_tables


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|")


def render() -> str:
    """The data dictionary as Markdown: every table, then every column."""
    lines = [
        "# ketamap data dictionary",
        "",
        "Generated from `schemas/columns.yaml` and `schemas/tables.yaml` by `ketamap datadict`; do not edit by hand.",
        "",
        "## Tables",
        "",
    ]
    for name, table in load_tables().items():
        lines += [
            f"### `{name}` (version {table.version})",
            "",
            table.description,
            "",
            f"Primary key: {', '.join(f'`{k}`' for k in table.primary_key)}",
            "",
            "| column | type | unit | missing allowed | description |",
            "|---|---|---|---|---|",
        ]
        for c in table.columns:
            lines.append(
                f"| `{c.name}` | {c.type} | {_cell(c.unit)} | {'yes' if c.nullable else 'no'} | {_cell(c.description)} |"
            )
        lines.append("")
    lines += [
        "## Columns",
        "",
        "| column | allowed values | bounds | pattern |",
        "|---|---|---|---|",
    ]
    for name, c in load_columns().items():
        allowed = ", ".join(c.enum) if c.enum else ""
        bounds = " ".join(
            x
            for x in (
                f">= {c.min}" if c.min is not None else "",
                f"<= {c.max}" if c.max is not None else "",
            )
            if x
        )
        pattern = f"`{c.pattern}`" if c.pattern else ""
        lines.append(f"| `{name}` | {_cell(allowed)} | {bounds} | {_cell(pattern)} |")
    return "\n".join(lines) + "\n"
