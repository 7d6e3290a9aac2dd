"""moto's TransactWriteItems, rolled back without copying whole tables (benchmark use).

moto keeps a transaction all or nothing by deep-copying every table the transaction touches,
once per item, before it starts: O(table size) per item, so a benchmark that writes tens of
thousands of items spends minutes copying. ``cheap_rollback`` keeps the same all-or-nothing
behaviour for hash-key-only tables by saving only what a transaction can change: the table's
item map (new items are new entries) and, for each Update, a copy of the item it updates in
place. On a cancelled transaction the map is put back. Everything else is moto's own code.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from moto.dynamodb import models
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table


@contextmanager
def cheap_rollback() -> Iterator[None]:
    original = models.DynamoDBBackend.transact_write_items
    real_deepcopy = copy.deepcopy

    def keep_tables(value: Any, memo: Any = None) -> Any:
        return value if isinstance(value, Table) else real_deepcopy(value, memo)

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        saved: dict[str, tuple[Table, dict[Any, Any]]] = {}
        for entry in transact_items:
            kind, op = next(iter(entry.items()))
            table = self.tables.get(op.get("TableName"))
            if table is None or table.has_range_key:
                return original(self, transact_items)  # not handled here: moto's own way
            if table.name not in saved:
                saved[table.name] = (table, dict(table.items))
            if kind == "Update":
                key = DynamoType(op["Key"][table.hash_key_attr])
                if key in table.items:  # updated in place: the saved map keeps the original
                    table.items[key] = real_deepcopy(table.items[key])
        models.copy = types.SimpleNamespace(deepcopy=keep_tables, copy=copy.copy)  # type: ignore[assignment]
        try:
            original(self, transact_items)
        except Exception:
            for table, items in saved.values():
                table.items.clear()
                table.items.update(items)
            raise
        finally:
            models.copy = copy  # type: ignore[assignment]

    models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    try:
        yield
    finally:
        models.DynamoDBBackend.transact_write_items = original  # type: ignore[method-assign]
