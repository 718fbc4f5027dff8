"""Problems found while validating a file, reported all at once.

A validator never stops at the first problem: it collects every one, each naming the
file, the row (1-based, header not counted) and the field, so a user fixes a catalog
in one pass instead of one error per run.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

SCHEMA_KEY = b"adswap.schema"
MAX_LISTED = 50


@dataclass(frozen=True)
class Problem:
    file: str
    row: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = [self.file]
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.field is not None:
            where.append(self.field)
        return ": ".join(where) + f": {self.message}"


class SchemaError(ValueError):
    """A file that cannot be used as a whole; carries every problem found."""

    def __init__(self, summary: str, problems: list[Problem]):
        self.summary = summary
        self.problems = list(problems)
        lines = [summary]
        lines += [f"  - {p}" for p in self.problems[:MAX_LISTED]]
        if len(self.problems) > MAX_LISTED:
            lines.append(f"  ... and {len(self.problems) - MAX_LISTED} more")
        super().__init__("\n".join(lines))


def with_schema_id(schema: pa.Schema, schema_id: str) -> pa.Schema:
    """Stamp a schema with its name and version so readers can refuse other versions."""
    return schema.with_metadata({**(schema.metadata or {}), SCHEMA_KEY: schema_id.encode()})


def schema_id_of(schema: pa.Schema) -> str | None:
    raw = (schema.metadata or {}).get(SCHEMA_KEY)
    return raw.decode() if raw is not None else None


def check_arrow_schema(actual: pa.Schema, expected: pa.Schema, file: str) -> list[Problem]:
    """Compare a file's schema with the expected one: version, missing columns, types."""
    problems: list[Problem] = []
    want_id, got_id = schema_id_of(expected), schema_id_of(actual)
    if want_id is not None and got_id != want_id:
        got = f"'{got_id}'" if got_id else "no schema id"
        problems.append(
            Problem(file, None, None, f"has {got}; this version reads '{want_id}' "
                    "(regenerate the file with this version of adswap)")
        )
    for field in expected:
        index = actual.get_field_index(field.name)
        if index < 0:
            problems.append(Problem(file, None, field.name, "column is missing"))
        elif not actual.field(index).type.equals(field.type):
            problems.append(
                Problem(file, None, field.name,
                        f"has type {actual.field(index).type}; expected {field.type}")
            )
    return problems
