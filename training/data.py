"""Reading what the service stored: events and items, in chunks, into plain arrays.

No ORM object is made per row; ids are mapped to dense indices once, and the users x items
matrix is only ever sparse.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp
from sqlalchemy import ClauseElement, ColumnElement, Engine, Float, cast, func, select

from app.db.models import Event, Item

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

CHUNK_ROWS = 50_000


@dataclass
class ItemTable:
    """The catalogue, one entry per item, in index order."""

    ids: list[str]
    titles: list[str]
    categories: list[list[str]]
    tags: list[list[str]]
    attributes: list[dict[str, Any]]
    hidden: npt.NDArray[np.bool_]

    @property
    def index(self) -> dict[str, int]:
        return {item_id: i for i, item_id in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Interactions:
    """Every stored event as parallel arrays; ``users``/``items`` index ``user_ids``/``item_ids``.

    ``weights`` are the signed event-type weights (a rating's multiplied by its value).
    """

    user_ids: list[str]
    item_ids: list[str]
    users: IntArray
    items: IntArray
    weights: FloatArray
    timestamps: FloatArray
    types: npt.NDArray[np.int8]
    type_names: list[str]

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def __len__(self) -> int:
        return int(self.users.shape[0])

    @property
    def window(self) -> tuple[datetime | None, datetime | None]:
        if len(self) == 0:
            return None, None
        return (
            datetime.fromtimestamp(float(self.timestamps.min()), UTC),
            datetime.fromtimestamp(float(self.timestamps.max()), UTC),
        )

    def subset(self, mask: npt.NDArray[np.bool_]) -> Interactions:
        """The events where ``mask`` holds, with the same id maps."""
        return Interactions(
            self.user_ids,
            self.item_ids,
            self.users[mask],
            self.items[mask],
            self.weights[mask],
            self.timestamps[mask],
            self.types[mask],
            self.type_names,
        )

    def matrix(
        self, half_life_days: float | None = None, now: float | None = None
    ) -> sp.csr_matrix:
        """Users x items sum of weights, optionally decayed by age.

        Returns
        -------
        csr_matrix of shape (n_users, n_items)
            Repeated (user, item) events add up; dislikes subtract.
        """
        weights = self.weights
        if half_life_days is not None and len(self):
            reference = float(self.timestamps.max()) if now is None else now
            age_days = (reference - self.timestamps) / 86_400.0
            weights = weights * np.exp2(-np.maximum(age_days, 0.0) / half_life_days)
        matrix = sp.csr_matrix(
            (weights, (self.users, self.items)), shape=(self.n_users, self.n_items)
        )
        matrix.sum_duplicates()
        matrix.eliminate_zeros()
        return matrix


def load_items(engine: Engine) -> ItemTable:
    """Every catalogue item, hidden ones included (their history still trains the model)."""
    ids: list[str] = []
    titles: list[str] = []
    categories: list[list[str]] = []
    tags: list[list[str]] = []
    attributes: list[dict[str, Any]] = []
    hidden: list[bool] = []
    query = select(
        Item.item_id, Item.title, Item.categories, Item.tags, Item.attributes, Item.hidden
    ).order_by(Item.item_id)
    with engine.connect() as connection:
        result = connection.execution_options(yield_per=CHUNK_ROWS).execute(query)
        for rows in result.partitions():
            for item_id, title, cats, item_tags, attrs, is_hidden in rows:
                ids.append(item_id)
                titles.append(title or "")
                categories.append(list(cats or []))
                tags.append(list(item_tags or []))
                attributes.append(dict(attrs or {}))
                hidden.append(bool(is_hidden))
    return ItemTable(ids, titles, categories, tags, attributes, np.asarray(hidden, dtype=bool))


def epoch_seconds(engine: Engine) -> ColumnElement[float]:
    """``occurred_at`` as epoch seconds, computed by the database: no datetime per row."""
    if engine.dialect.name == "postgresql":
        return cast(func.extract("epoch", Event.occurred_at), Float)
    # SQLite keeps UTC text; julianday() reads it, fractions of a second included.
    return (func.julianday(Event.occurred_at) - 2440587.5) * 86400.0


def _fetch_chunks(engine: Engine, query: ClauseElement) -> Iterator[Sequence[Any]]:
    """Plain tuples in chunks from a server-side cursor: a million events do not fit the
    per-row cost of result objects."""
    sql = str(query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
    with engine.connect() as connection:
        raw = connection.connection.dbapi_connection
        assert raw is not None
        cursor: Any
        if engine.dialect.name == "postgresql":
            cursor = raw.cursor(name="recsys_training_read")
            cursor.itersize = CHUNK_ROWS
        else:
            cursor = raw.cursor()
        try:
            cursor.execute(sql)
            while rows := cursor.fetchmany(CHUNK_ROWS):
                yield rows
        finally:
            cursor.close()


def count_events(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(Event)).scalar_one())


def load_interactions(
    engine: Engine,
    event_weights: Mapping[str, float],
    item_ids: list[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Interactions:
    """Every stored event, read in chunks of ``CHUNK_ROWS``.

    Parameters
    ----------
    engine : the service's database
    event_weights : event type -> signed weight (``rating`` is multiplied by the value)
    item_ids : the item index to use (e.g. the catalogue's); unknown items are appended
    progress : called with the number of rows read so far
    """
    if engine.dialect.name == "postgresql":
        return _load_interactions_postgresql(engine, event_weights, item_ids or [], progress)
    return _load_interactions_rows(engine, event_weights, item_ids or [], progress)


def _load_interactions_rows(
    engine: Engine,
    event_weights: Mapping[str, float],
    item_ids: list[str],
    progress: Callable[[int], None] | None,
) -> Interactions:
    """Any database: rows in chunks from a plain cursor, ids mapped in Python."""
    user_index: dict[str, int] = {}
    item_index: dict[str, int] = {item_id: i for i, item_id in enumerate(item_ids)}
    users: list[IntArray] = []
    items: list[IntArray] = []
    weights: list[FloatArray] = []
    stamps: list[FloatArray] = []
    kinds: list[npt.NDArray[np.int8]] = []
    type_weight = dict(event_weights)
    type_code = {name: code for code, name in enumerate(type_weight)}
    query = select(Event.user_id, Event.item_id, Event.type, Event.value, epoch_seconds(engine))
    read = 0
    for rows in _fetch_chunks(engine, query):
        n = len(rows)
        user_col, item_col, type_col, value_col, stamp_col = zip(*rows, strict=True)
        # Comprehensions over columns: the per-row cost is what bounds a 1M-event read.
        users.append(
            np.fromiter(
                [user_index.setdefault(u, len(user_index)) for u in user_col],
                dtype=np.int64,
                count=n,
            )
        )
        items.append(
            np.fromiter(
                [item_index.setdefault(i, len(item_index)) for i in item_col],
                dtype=np.int64,
                count=n,
            )
        )
        chunk_weights = np.fromiter(
            [type_weight.get(t, 0.0) for t in type_col], dtype=np.float64, count=n
        )
        is_rating = np.fromiter([t == "rating" for t in type_col], dtype=bool, count=n)
        if is_rating.any():
            values = np.array([1.0 if v is None else v for v in value_col], dtype=np.float64)
            chunk_weights = np.where(is_rating, chunk_weights * values, chunk_weights)
        weights.append(chunk_weights)
        kinds.append(np.fromiter([type_code.get(t, -1) for t in type_col], dtype=np.int8, count=n))
        stamps.append(np.asarray(stamp_col, dtype=np.float64))
        read += n
        if progress is not None:
            progress(read)

    def joined(parts: list[Any], dtype: type) -> Any:
        return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)

    return Interactions(
        user_ids=list(user_index),
        item_ids=list(item_index),
        users=joined(users, np.int64),
        items=joined(items, np.int64),
        weights=joined(weights, np.float64),
        timestamps=joined(stamps, np.float64),
        types=joined(kinds, np.int8),
        type_names=list(type_weight),
    )


def _load_interactions_postgresql(
    engine: Engine,
    event_weights: Mapping[str, float],
    item_ids: list[str],
    progress: Callable[[int], None] | None,
) -> Interactions:
    """PostgreSQL: the events straight into Arrow columns by the ADBC PostgreSQL driver (binary
    ``COPY`` parsed in C++), then dictionary-encoded; no Python object per event and no join in
    the database.

    Users are numbered in id order; items keep ``item_ids``'s order, items only the events know
    are appended in id order (the same numbering as ``_load_interactions_rows`` gives).
    """
    import adbc_driver_postgresql.dbapi as adbc

    type_weight = dict(event_weights)
    type_names = list(type_weight)
    uri = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    batches: list[pa.RecordBatch] = []
    read = 0
    with adbc.connect(uri) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT user_id, item_id, type, COALESCE(value, 1.0)::float8 AS value, "
            "date_part('epoch', occurred_at) AS stamp FROM events"
        )
        for batch in cursor.fetch_record_batch():
            batches.append(batch)
            read += batch.num_rows
            if progress is not None:
                progress(read)
    table = pa.Table.from_batches(batches, schema=_EVENT_COLUMNS)  # empty: no rows
    del batches
    users, user_ids = _codes(table["user_id"])
    items, item_codes = _codes(table["item_id"], order=item_ids)
    kinds, _ = _codes(table["type"], order=type_names)
    # Types the weights leave out sort after ``type_names``: code -1 and weight 0.
    types = np.where(kinds < len(type_names), kinds, -1).astype(np.int8)
    weight_of = np.array([type_weight[name] for name in type_names] + [0.0])
    weights = weight_of[types]
    if "rating" in type_weight:
        is_rating = types == type_names.index("rating")
        weights = np.where(is_rating, weights * table["value"].to_numpy(), weights)
    timestamps = table["stamp"].to_numpy().astype(np.float64)
    del table
    # pyarrow's allocator keeps freed pages for reuse; nothing else here will use them.
    pa.default_memory_pool().release_unused()
    return Interactions(
        user_ids=user_ids,
        item_ids=item_codes,
        users=users,
        items=items,
        weights=weights.astype(np.float64),
        timestamps=timestamps,
        types=types,
        type_names=type_names,
    )


_EVENT_COLUMNS = pa.schema(
    [
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("type", pa.string()),
        ("value", pa.float64()),
        ("stamp", pa.float64()),
    ]
)


def _codes(column: pa.ChunkedArray, order: Sequence[str] = ()) -> tuple[IntArray, list[str]]:
    """Dense codes of a string column: the values of ``order`` first, in that order, then the
    column's other values in sorted order."""
    encoded = pc.dictionary_encode(column).combine_chunks()
    seen: list[str] = encoded.dictionary.to_pylist()
    first = {value: code for code, value in enumerate(order)}
    rest = sorted(value for value in seen if value not in first)
    names = [*order, *rest]
    position = {value: code for code, value in enumerate(rest, start=len(order))}
    position.update(first)
    remap = np.fromiter((position[value] for value in seen), dtype=np.int64, count=len(seen))
    indices = encoded.indices.to_numpy(zero_copy_only=False)
    return remap[indices] if len(indices) else np.empty(0, dtype=np.int64), names
