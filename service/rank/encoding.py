"""Request -> model inputs with the bundle's own FeatureEncoder, columnar.

User and context fields are encoded once (one row) and broadcast to the N candidates; item fields are
gathered into one column per field and encoded in one call per request. For categorical fields the
encoder's vocabulary is compiled at load into a ``token -> index`` dict *by running the encoder itself on
every vocabulary token*, so a column of strings is mapped by one C-level ``map(dict.get, ...)``; values
that miss the dict (unknown tokens, numbers, booleans) are re-encoded by the encoder, so the result is
always exactly ``encoder.transform``'s (``tests/service/test_encoding.py`` checks it). With an
``ItemCache``, only the candidates whose app or features are new to it are encoded at all.

For a bundle with request-shaped graphs (``item_tower`` given) the user and context inputs stay one row
(``[1, ...]``) and the item fields become the ``item_part`` ``[N, P]`` the item graph computes from
them; the cache keeps each app's item part (and not its item inputs, which nothing reads then), so a
known app runs no item graph (``item_part_rows`` counts the candidates that did). Either way the cache
keeps each app's missing and OOV counts per item field (``ITEM_STATS``), so the feature metrics of a
cached app cost one gather, not one pass per field.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import repeat
from typing import Any

import numpy as np
import numpy.typing as npt

from model.bundle import ITEM_PART
from model.columns import first_bad_number
from model.encoder import CategoricalState, FeatureEncoder, InputRole
from model.schema import FeatureKind, FeatureSpec, Source
from model.vocabulary import MISSING, OOV
from service.errors import Loc, RequestError
from service.metrics import ITEM_CACHE_LOOKUPS, FeatureStats
from service.rank.item_cache import ItemCache
from service.rank.payload import RankRequest
from service.rank.served import MAX_LOGGED_CHARS, LoggedFields

Arrays = dict[str, npt.NDArray[Any]]
LocOf = Callable[[str, int], Loc]
ItemTower = Callable[[Arrays], npt.NDArray[np.float32]]
_SCALARS = frozenset({str, int, float, bool, type(None)})
_MULTI = _SCALARS | {list}
_TOKENS = frozenset({str, type(None)})
ITEM_STATS = "__item_stats__"  # beside the item inputs: each candidate's missing and OOV counts


def _objects(values: Sequence[Any]) -> npt.NDArray[np.object_]:
    return np.fromiter(values, dtype=object, count=len(values))


class RequestEncoder:
    """Encodes the fields of a /rank request for one bundle's encoder."""

    def __init__(
        self, encoder: FeatureEncoder, item_cache_size: int = 0, item_tower: ItemTower | None = None
    ) -> None:
        """``item_cache_size``: apps whose item encoding is kept (``ItemCache``); 0 keeps none.

        ``item_tower``: the item graph (item inputs -> item part) of a request-shaped bundle, or None.
        """
        self.encoder = encoder
        self.item_tower = item_tower
        self.item_part_rows = 0
        schema = encoder.schema
        self.shared = schema.by_source(Source.USER) + schema.by_source(Source.CONTEXT)
        self.items = schema.by_source(Source.ITEM)
        # the schema's rule for absent id fields, looked up once
        self.user_id_fields = {s.name for s in self.shared if schema.filled_from(s.name) == "user_id"}
        self.item_id_fields = {s.name for s in self.items if schema.filled_from(s.name) == "app_id"}
        self.roles = {f.name: f.role for f in encoder.layout.fields}
        self.tables = {
            name: self._table(name, state.vocabulary)
            for name, state in encoder.states.items()
            if isinstance(state, CategoricalState)
        }
        self.stats = FeatureStats(schema.names)
        self._position = {name: i for i, name in enumerate(schema.names)}
        self._item_positions = np.array([self._position[s.name] for s in self.items], dtype=np.intp)
        self.item_cache = ItemCache(item_cache_size) if item_cache_size > 0 else None
        self._flushed = (0, 0)
        self.logged = LoggedFields(
            frozenset(s.name for s in schema.by_source(Source.USER)),
            frozenset(s.name for s in schema.by_source(Source.CONTEXT)),
            frozenset(s.name for s in self.items),
        )

    def flush_metrics(self) -> None:
        """Move the feature counts and the item cache's hits and misses into Prometheus."""
        self.stats.flush()
        cache = self.item_cache
        if cache is not None:
            hits, misses = cache.hits, cache.misses  # only the request thread writes them
            ITEM_CACHE_LOOKUPS.labels("hit").inc(hits - self._flushed[0])
            ITEM_CACHE_LOOKUPS.labels("miss").inc(misses - self._flushed[1])
            self._flushed = (hits, misses)

    def _table(self, name: str, vocabulary: list[str]) -> dict[Any, int]:
        tokens = np.array([*vocabulary, ""], dtype=str)
        codes = self.encoder.transform({name: tokens}, tokens.size)[name].tolist()
        table: dict[Any, int] = dict(zip(tokens.tolist(), codes, strict=True))
        table[None] = int(self.encoder.transform({name: _objects([None])}, 1)[name][0])
        return table

    def encode(self, request: RankRequest) -> Arrays:
        """The model inputs for every candidate of ``request``, keyed by field name.

        Raises:
            RequestError: a feature value has the wrong type or cannot be read (the loc names it).
        """
        n = len(request.app_ids)
        counts = np.zeros((3, len(self._position)), dtype=np.int64)
        inputs = self._encode_shared(request, n, counts)
        inputs.update(self._encode_items(request, n, counts))
        self.stats.add_many(counts)
        return inputs

    def _encode_shared(self, request: RankRequest, n: int, counts: npt.NDArray[np.int64]) -> Arrays:
        slow: dict[str, npt.NDArray[Any]] = {}
        single: Arrays = {}
        for spec in self.shared:
            source = request.user if spec.source is Source.USER else request.context
            value = source.get(spec.name)
            if value is None and spec.name in self.user_id_fields:
                value = request.user_id
            table = self.tables.get(spec.name)
            if table is not None and (value is None or type(value) is str):
                single[spec.name] = np.array([table.get(value, OOV)], dtype=np.int64)
            else:
                _check_types([value], spec, _shared_locator(spec))
                slow[spec.name] = _objects([value])
        if slow:
            single.update(
                self._transform(slow, 1, lambda name, row: _shared_loc(self.schema_field(name), row))
            )
        out: Arrays = {}
        for name, column in single.items():
            if self.roles[name] is InputRole.INDEX:  # one code: counted in Python, cheaper than numpy
                code = int(column[0])
                i = self._position[name]
                counts[0, i] += 1
                if code <= OOV:
                    counts[1 if code == MISSING else 2, i] += 1
            else:
                self._count(name, column, 1, counts)
            out[name] = column if self.item_tower is not None else np.repeat(column, n, axis=0)
        return out

    def _encode_items(self, request: RankRequest, n: int, counts: npt.NDArray[np.int64]) -> Arrays:
        app_ids, features = request.app_ids, request.features
        if self.item_cache is None:
            out = self._with_item_part(self._encode_item_rows(app_ids, features, None, None))
        else:

            def encode_rows(rows: list[int]) -> tuple[Arrays, set[int]]:
                uncacheable: set[int] = set()
                if len(rows) == len(app_ids):  # all of them: no subset to copy
                    encoded = self._encode_item_rows(app_ids, features, None, uncacheable)
                    return self._with_item_part(encoded), uncacheable | _bulky(features, self.logged.item)
                subset = ([app_ids[i] for i in rows], [features[i] for i in rows])
                encoded = self._encode_item_rows(*subset, rows, uncacheable)
                return self._with_item_part(encoded), uncacheable | _bulky(subset[1], self.logged.item)

            out = self.item_cache.encode(app_ids, features, encode_rows)
        stats = out.pop(ITEM_STATS)
        counts[0, self._item_positions] += n
        counts[1:, self._item_positions] += stats.sum(axis=0)
        return out

    def _with_item_part(self, encoded: Arrays) -> Arrays:
        """What scoring needs of some candidates' item inputs: the inputs themselves, or their item
        part when the bundle has an item graph (nothing else reads the inputs then); and their
        missing and OOV counts (``ITEM_STATS``), so a cached app is counted without its inputs."""
        stats = self._item_stats(encoded)
        if self.item_tower is None:
            return {**encoded, ITEM_STATS: stats}
        self.item_part_rows += len(stats)
        return {ITEM_PART: self.item_tower(encoded), ITEM_STATS: stats}

    def _item_stats(self, encoded: Arrays) -> npt.NDArray[np.int32]:
        """``[n, 2, item fields]``: per candidate, each item field's missing and OOV count (``_count``'s
        rules, row by row)."""
        n = len(next(iter(encoded.values())))
        stats = np.zeros((n, 2, len(self.items)), dtype=np.int32)
        for j, spec in enumerate(self.items):
            column, role = encoded[spec.name], self.roles[spec.name]
            if role is InputRole.INDEX:
                stats[:, 0, j] = column == MISSING
                stats[:, 1, j] = column == OOV
            elif role is InputRole.BAG:
                stats[:, 0, j] = ~column.any(axis=1)
                stats[:, 1, j] = np.count_nonzero(column == OOV, axis=1)
        return stats

    def _encode_item_rows(
        self,
        app_ids: list[str],
        features: list[dict[str, Any]],
        rows: list[int] | None,
        uncacheable: set[int] | None,
    ) -> Arrays:
        """Item inputs of some candidates; ``rows`` (None: all) are their positions, for error locations.

        Adds to ``uncacheable`` (None: no cache to tell) the candidates (indexes into ``features``)
        that ``ItemCache`` must not keep: a token field (categorical, hashed, multi-valued) holds
        something other than a string or null, so that an equal value of another type (``1`` and
        ``True``) could read differently.
        """
        out: Arrays = {}
        slow: dict[str, npt.NDArray[Any]] = {}
        for spec in self.items:
            name = spec.name
            defaults = app_ids if name in self.item_id_fields else None
            table = self.tables.get(name)
            if table is not None:
                out[name] = self._lookup(spec, table, features, defaults, rows, uncacheable)
            else:
                column = list(_values(features, name, defaults))
                kinds = _check_types(column, spec, _item_locator(name, rows))
                if spec.kind is not FeatureKind.NUMERIC:
                    _add_non_tokens(column, kinds, range(len(column)), uncacheable)
                slow[name] = _objects(column)
        if slow:
            out.update(self._transform(slow, len(features), lambda name, k: _item_loc(name, _at(rows, k))))
        return out

    def schema_field(self, name: str) -> FeatureSpec:
        return self.encoder.schema.field(name)

    def _lookup(
        self,
        spec: FeatureSpec,
        table: Mapping[Any, int],
        features: list[dict[str, Any]],
        defaults: list[str] | None,
        rows: list[int] | None,
        uncacheable: set[int] | None,
    ) -> npt.NDArray[np.int64]:
        """Codes of one categorical item column through the compiled table; misses go through the encoder.

        ``rows`` are the candidates' positions in the request (None: the candidates are all of them).
        The table's keys are strings and None, so only a miss can be another type (``uncacheable``).
        """
        n = len(features)
        try:
            codes = np.fromiter(
                map(table.get, _values(features, spec.name, defaults), repeat(OOV)), np.int64, n
            )
        except TypeError:  # an unhashable value (object or list): find it and say where
            _check_types(list(_values(features, spec.name, defaults)), spec, _item_locator(spec.name, rows))
            raise
        misses = np.flatnonzero(codes == OOV)
        if misses.size:
            local = misses.tolist()
            values = list(
                _values([features[i] for i in local], spec.name, defaults and [defaults[i] for i in local])
            )
            kinds = _check_types(values, spec, lambda k: _item_loc(spec.name, _at(rows, local[k])))
            _add_non_tokens(values, kinds, local, uncacheable)
            codes[misses] = self.encoder.transform({spec.name: _objects(values)}, len(values))[spec.name]
        return codes

    def _transform(self, columns: dict[str, npt.NDArray[Any]], n: int, loc_of: LocOf) -> Arrays:
        """``encoder.transform`` on some columns; a ValueError (a number that is not one) becomes a 422."""
        try:
            encoded = self.encoder.transform(columns, n)
        except ValueError as error:
            name, _, reason = str(error).partition(": ")
            if name not in columns:
                raise RequestError.at(("body",), str(error)) from None
            row = first_bad_number(columns[name])
            raise RequestError.at(loc_of(name, row or 0), reason) from None
        return {name: encoded[name] for name in columns}

    def _count(self, name: str, column: npt.NDArray[Any], values: int, counts: npt.NDArray[np.int64]) -> None:
        i = self._position[name]
        role = self.roles[name]
        counts[0, i] += values
        if role is InputRole.INDEX:
            special = column[column <= OOV]  # usually empty: one compare over the column
            if special.size:
                counts[1, i] += np.count_nonzero(special == MISSING)
                counts[2, i] += special.size - np.count_nonzero(special == MISSING)
        elif role is InputRole.BAG:
            counts[1, i] += np.count_nonzero(~column.any(axis=1))
            counts[2, i] += np.count_nonzero(column == OOV)


def _values(features: list[dict[str, Any]], name: str, defaults: list[str] | None) -> Iterator[Any]:
    """Column ``name`` of the candidates' features (C-level ``map``), ``defaults`` where a key is absent."""
    if defaults is None:
        return map(dict.get, features, repeat(name))
    return map(dict.get, features, repeat(name), defaults)


def _shared_loc(spec: FeatureSpec, row: int) -> Loc:
    del row
    return ("body", spec.source.value, spec.name)


def _shared_locator(spec: FeatureSpec) -> Callable[[int], Loc]:
    def loc(row: int) -> Loc:
        return _shared_loc(spec, row)

    return loc


def _item_locator(name: str, rows: Sequence[int] | None) -> Callable[[int], Loc]:
    """Where value ``k`` of a column sits; ``rows`` maps k to the candidate when values are a subset."""

    def loc(k: int) -> Loc:
        return _item_loc(name, _at(rows, k))

    return loc


def _at(rows: Sequence[int] | None, k: int) -> int:
    """The request position of the k-th candidate of a subset (``rows``; None: the whole request)."""
    return k if rows is None else rows[k]


def _item_loc(name: str, row: int) -> Loc:
    return ("body", "candidates", row, "features", name)


def _bulky(features: Sequence[Mapping[str, Any]], fields: frozenset[str]) -> set[int]:
    """The candidates whose features ``ItemCache`` must not keep: it holds the dicts as they came, so
    one with keys outside the schema's item ``fields`` or a long value would keep hostile bytes alive
    (an app's honest features are a few short values). Called for cache misses only."""
    return {k for k, values in enumerate(features) if not fields.issuperset(values) or _long(values)}


def _long(values: Mapping[str, Any]) -> bool:
    """Whether a string or a list among ``values`` is longer than a logged value may be."""
    for value in values.values():
        if isinstance(value, str) and len(value) > MAX_LOGGED_CHARS:
            return True
        if isinstance(value, list) and len(str(value)) > MAX_LOGGED_CHARS:
            return True
    return False


def _add_non_tokens(
    values: Sequence[Any], kinds: set[type], indexes: Sequence[int], into: set[int] | None
) -> None:
    """Add to ``into`` the index of each value that is neither a string nor null (``kinds``: their types)."""
    if into is not None and not kinds <= _TOKENS:
        into.update(i for i, value in zip(indexes, values, strict=True) if type(value) not in _TOKENS)


def _check_types(values: Sequence[Any], spec: FeatureSpec, loc: Callable[[int], Loc]) -> set[type]:
    """Feature values are JSON scalars (lists of scalars too for multi-valued fields); their types."""
    allowed = _MULTI if spec.kind is FeatureKind.MULTI else _SCALARS
    kinds = set(map(type, values))
    if kinds <= allowed and (list not in kinds or _scalar_lists(values)):
        return kinds
    first = next(i for i, v in enumerate(values) if type(v) not in allowed or not _scalar_lists([v]))
    what = "a scalar or a list of scalars" if spec.kind == "multi" else "a string, number, boolean or null"
    raise RequestError.at(loc(first), f"must be {what}", "type_error")


def _scalar_lists(values: Sequence[Any]) -> bool:
    return all(type(item) in _SCALARS for v in values if type(v) is list for item in v)
