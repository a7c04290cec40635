"""``portway certs``: the admin API's certificate list as a terminal table."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text


def _days(days: float) -> Text:
    style = "red" if days < 7 else "yellow" if days < 21 else "green"
    label = "expired" if days < 0 else f"{days:.1f}"
    return Text(label, style=style)


def certificates_table(certificates: list[dict[str, Any]]) -> Table:
    table = Table(title="Certificates", title_justify="left")
    for column in ("listener", "hosts", "issuer", "expires (UTC)", "days left", "source", "note"):
        table.add_column(column)
    for c in certificates:
        notes = []
        if c.get("default"):
            notes.append("default")
        if c.get("client_auth"):
            notes.append(f"mTLS {c['client_auth']}")
        if c.get("reload_error"):
            notes.append(f"reload refused: {c['reload_error']}")
        table.add_row(
            str(c["listener"]),
            ", ".join(c["hosts"]),
            str(c["issuer"]),
            str(c["not_after"])[:19].replace("T", " "),
            _days(float(c["days_left"])),
            str(c["source"]),
            "; ".join(notes),
        )
    return table
