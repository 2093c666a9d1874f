"""docs/schema.md lists exactly the columns the DDL creates, relation by relation."""

from __future__ import annotations

import re
from pathlib import Path

from schema import read
from schema.lake import view_name
from schema.relations import RECORD_TABLES, VIEW_DDL
from schema.store import Store
from schema.tables import Base

DOC = Path(__file__).parents[2] / "docs" / "schema.md"
LAKE_RELATIONS = (*RECORD_TABLES, *(view_name(ddl) for ddl in VIEW_DDL))  # in the order docs/schema.md lists them


def documented() -> dict[str, dict[str, list[str]]]:
    """{section: {relation: [columns in order]}} from '## ' sections, '### ' headings and '| `col` |' rows."""
    sections: dict[str, dict[str, list[str]]] = {}
    section = relation = ""
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            section = line[3:].split()[0].lower()
            sections.setdefault(section, {})
        elif line.startswith("### "):
            relation = line[4:]
            sections[section][relation] = []
        elif match := re.match(r"\| `(\w+)` \|", line):
            sections[section][relation].append(match.group(1))
    return sections


def test_record_relations_documented_exactly(tmp_store: Store) -> None:
    docs = documented()["record"]
    assert [name.split()[0] for name in docs] == list(LAKE_RELATIONS)
    for heading, columns in docs.items():
        name = heading.split()[0]
        described = read.query(f"DESCRIBE {name}", store=tmp_store).column("column_name").to_pylist()
        assert columns == described, name


def test_job_tables_documented_exactly() -> None:
    docs = documented()["job"]
    assert {name: cols for name, cols in docs.items()} == {
        name: [c.name for c in table.columns] for name, table in Base.metadata.tables.items()
    }
