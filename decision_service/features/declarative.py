"""Declarative features: where a feature group's values come from, as data, not code.

A project declares its **sources** (an event table and entity tables, Parquet or CSV, with
a column mapping) and, per stored feature, **how it is computed** (``Feature.compute``):

  windowed aggregations of the entity's events   Count, Sum, Mean, Std, Min, Max, Last,
                                                 DistinctCount, FirstSeenCount,
                                                 TimeSinceFirst/Last
  shares of a categorical column                 Share (a vector, optionally recency-
                                                 weighted), Entropy, TopShare
  ratios                                         Ratio(numerator, denominator), optionally
                                                 smoothed towards a prior
  the entity's own attributes                    Attribute (optionally as a vocabulary
                                                 index), TimeSinceAttribute
  derived from features declared before it       Expr (DuckDB SQL), PercentileInGroup

One compiler (offline/features/compiler.py) turns a group into DuckDB SQL for both a
snapshot as of time T (materialization) and point-in-time values for (entity, time) rows
(training sets, backfill): the same SQL, so the two cannot drift. It runs on DuckDB, or
transpiled on Spark (``--engine spark``), where an expression without a faithful Spark form
is refused by name.

Semantics, for a value of entity ``k`` at time ``t`` (ms):
  * only events with ``event time < t`` count (strictly before: an event at ``t`` itself
    is not yet known at ``t``);
  * a window of ``w`` keeps events with ``t - w < event time`` (an event exactly ``w``
    old has left the window); ``closed="left"`` keeps it (``t - w <= event time``);
  * ``where`` keeps events whose event type is one of the given names;
  * ``time=`` counts an event by another time column of the source (a chargeback by its
    arrival, not by its payment): "before t" and the window then apply to that column,
    and an event whose column is NULL does not count;
  * an aggregate over no events (or fewer than its ``min_count``), a missing attribute,
    or a non-finite result (NaN, inf) is the feature's declared default.

Windows and durations are strings ``<number><unit>`` with unit ``s``, ``m``, ``h``, ``d``
(``"7d"``, ``"30m"``) or seconds as a number. Nothing here runs a query or reads a file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

_UNITS_S = {"s": 1.0, "m": 60.0, "h": 3_600.0, "d": 86_400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def seconds(duration: str | float | int) -> float:
    """``"7d"`` -> 604800.0; a number is seconds. On failure: ValueError naming the value."""
    if isinstance(duration, (int, float)) and not isinstance(duration, bool):
        if duration <= 0:
            raise ValueError(f"a duration must be > 0, got {duration!r}")
        return float(duration)
    m = _DURATION.match(str(duration))
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"not a duration: {duration!r} (expected e.g. '30m', '24h', '7d', or seconds)")
    return float(m.group(1)) * _UNITS_S[m.group(2)]


def identifier(name: str, what: str) -> str:
    """``name`` if it is a plain column / feature name (letters, digits, _), else ValueError."""
    if not isinstance(name, str) or not _IDENT.match(name):
        raise ValueError(f"{what} {name!r} is not a plain name (letters, digits and _)")
    return name


# --- sources ---------------------------------------------------------------------------------

TimeUnit = Literal["s", "ms", "us", "timestamp"]


@dataclass(frozen=True)
class Time:
    """An event-time column: epoch numbers in ``unit`` or a timestamp; a timestamp without a
    timezone is read in ``timezone``."""

    column: str
    unit: TimeUnit = "ms"
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        identifier(self.column, "time column")
        if self.unit not in ("s", "ms", "us", "timestamp"):
            raise ValueError(f"time unit {self.unit!r}: expected s, ms, us or timestamp")


TEXT_OFFSET = r"(Z|z|[+-]\d{2}(:?\d{2})?)$"
"""Text timestamps ending in an explicit UTC offset or Z (ISO 8601)."""


def time_sql(column: str, time: Time | str, alias: str | None = "e") -> str:
    """DuckDB SQL: epoch milliseconds (BIGINT) of a time column (``alias.column``; a bare
    column with ``alias=None``, e.g. in a derived column). Read by the compiler's session,
    which runs in UTC."""
    unit = time.unit if isinstance(time, Time) else time
    quoted = '"' + column.replace('"', '""') + '"'
    c = quoted if alias is None else f"{alias}.{quoted}"
    if unit == "ms":
        return f"CAST({c} AS BIGINT)"
    if unit == "s":
        return f"CAST(round({c} * 1000) AS BIGINT)"
    if unit == "us":
        return f"CAST(floor({c} / 1000) AS BIGINT)"
    tz = time.timezone if isinstance(time, Time) else "UTC"
    if tz == "UTC":  # the session runs in UTC: a naive timestamp is read as UTC
        return f"epoch_ms(CAST({c} AS TIMESTAMPTZ))"
    # a naive timestamp is wall time in ``tz``; an aware one is kept (ICU's timezone()), and so
    # is text that carries its own offset or Z ('2026-01-01T05:00:00+05:00')
    offset = "'" + TEXT_OFFSET + "'"
    zone = "'" + tz.replace("'", "''") + "'"
    aware_text = f"(typeof({c}) = 'VARCHAR' AND regexp_matches(trim(CAST({c} AS VARCHAR)), {offset}))"
    return (
        f"epoch_ms(CASE WHEN typeof({c}) = 'TIMESTAMP WITH TIME ZONE' OR {aware_text} "
        f"THEN CAST({c} AS TIMESTAMPTZ) ELSE timezone({zone}, CAST({c} AS TIMESTAMP)) END)"
    )


@dataclass(frozen=True)
class Table:
    """One row per entity: a catalog, a user table. ``path``: a file, a folder or a glob
    (relative paths start at the project's ``data`` folder); ``key`` the entity id column;
    ``derived`` columns are DuckDB SQL expressions over the file's columns, usable like them."""

    name: str
    path: str
    key: str
    format: Literal["parquet", "csv"] = "parquet"
    hive_partitioning: bool = False
    delimiter: str = ","  # CSV only
    derived: Mapping[str, str] = field(default_factory=dict)  # name -> DuckDB SQL over the row

    def __post_init__(self) -> None:
        identifier(self.name, "table name")
        identifier(self.key, f"key of table {self.name!r}")
        _check_derived(self.derived, f"table {self.name!r}")


@dataclass(frozen=True)
class Lookup:
    """Attributes joined onto each event from an entity table: ``columns`` of ``table``
    where ``table.key`` equals the event's ``on`` column (e.g. an item's category)."""

    table: Table
    on: str
    columns: tuple[str, ...]

    def __post_init__(self) -> None:
        identifier(self.on, "lookup column")
        for c in self.columns:
            identifier(c, f"column of {self.table.name!r}")


@dataclass(frozen=True)
class Events:
    """An event table: who (entity id columns), when (``time``), what (``event_type``, the
    project's own vocabulary ``event_types``), and value columns, plus attributes looked up
    per event. ``derived`` columns (DuckDB SQL, e.g. an event type
    ``CASE WHEN rating >= 4 THEN 'like' ELSE 'rating' END``) can be used as any column, the
    event type included.

    Derived columns are computed in declared order, each over the file's columns, the
    columns looked up so far and the derived columns declared before it: an amount in EUR
    from a looked-up rate (``amount_minor / pow(10, exponent) * eur_rate``), then its log
    (``ln(1 + amount_eur)``), or "abroad" from the cardholder's looked-up home country
    (``country <> home``). A lookup is joined as soon as its ``on`` column exists: a file
    column first, a derived one right after that column is computed."""

    name: str
    path: str
    time: Time
    keys: Mapping[str, str]  # entity name (a group's ``entity``) -> its id column here
    event_type: str | None = None
    format: Literal["parquet", "csv"] = "parquet"
    hive_partitioning: bool = False
    lookups: tuple[Lookup, ...] = ()
    event_types: tuple[str, ...] = ()  # the project's vocabulary (empty: not checked)
    delimiter: str = ","  # CSV only
    derived: Mapping[str, str] = field(default_factory=dict)  # name -> DuckDB SQL over the row
    optional_keys: tuple[str, ...] = ()  # entities a row may lack (NULL id: no such party)

    def __post_init__(self) -> None:
        identifier(self.name, "source name")
        unknown = [k for k in self.optional_keys if k not in self.keys]
        if unknown:
            raise ValueError(f"source {self.name!r}: optional_keys {unknown} are not among its keys")
        for entity, column in self.keys.items():
            identifier(entity, "entity")
            identifier(column, f"id column of {entity!r}")
        if self.event_type is not None:
            identifier(self.event_type, "event-type column")
        if isinstance(self.event_types, str):
            object.__setattr__(self, "event_types", (self.event_types,))
        _check_derived(self.derived, f"source {self.name!r}")


def _check_derived(derived: Mapping[str, str], where: str) -> None:
    for name, sql in derived.items():
        identifier(name, f"derived column of {where}")
        if not isinstance(sql, str) or not sql.strip():
            raise ValueError(f"derived column {name!r} of {where}: expected a DuckDB SQL expression")


# --- how a feature is computed ---------------------------------------------------------------


WindowClosed = Literal["neither", "left"]


@dataclass(frozen=True)
class Aggregation:
    """Over the entity's events strictly before ``t``, within ``window`` (None = all time),
    of the event types in ``where`` (empty = every event).

    Keyword-only options, for every aggregation:
      ``time``       count each event by this time column of the source instead of the
                     source's time: a name (read in the source time's unit and timezone) or
                     a ``Time``. E.g. chargebacks by their arrival: ``Count("90d",
                     time="chargeback_at")``. "Strictly before t" and the window apply to
                     it; an event whose column is NULL never counts here.
      ``closed``     ``"neither"`` (default): the window is ``(t - w, t)``; ``"left"``:
                     ``[t - w, t)``, an event exactly ``w`` old still counts (SQL's
                     ``ts >= t - INTERVAL w``). The end is always open.
      ``min_count``  fewer events than this (with a non-NULL ``of`` value, when the
                     aggregation has one) give the feature's default: e.g. a standard
                     deviation needs ``min_count=2`` to mean anything."""

    window: str | float | None = None
    where: tuple[str, ...] = ()
    time: str | Time | None = field(default=None, kw_only=True)
    closed: WindowClosed = field(default="neither", kw_only=True)
    min_count: int = field(default=0, kw_only=True)

    def __post_init__(self) -> None:
        if self.window is not None:
            seconds(self.window)
        if isinstance(self.where, str):
            object.__setattr__(self, "where", (self.where,))
        if isinstance(self.time, str):
            identifier(self.time, f"{type(self).__name__}(time=...)")
        elif self.time is not None and not isinstance(self.time, Time):
            raise ValueError(f"{type(self).__name__}(time={self.time!r}): expected a column name or a Time")
        if self.closed not in ("neither", "left"):
            raise ValueError(f"{type(self).__name__}(closed={self.closed!r}): expected 'neither' or 'left'")
        if isinstance(self.min_count, bool) or not isinstance(self.min_count, int) or self.min_count < 0:
            raise ValueError(f"{type(self).__name__}(min_count={self.min_count!r}): expected an int >= 0")

    @property
    def window_s(self) -> float | None:
        return None if self.window is None else seconds(self.window)


@dataclass(frozen=True)
class Count(Aggregation):
    """Number of events."""


@dataclass(frozen=True)
class _Of(Aggregation):
    of: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        identifier(self.of, f"{type(self).__name__}(of=...)")


@dataclass(frozen=True)
class Sum(_Of):
    """Sum of a value column."""


@dataclass(frozen=True)
class Mean(_Of):
    """Mean of a value column."""


@dataclass(frozen=True)
class Std(_Of):
    """Population standard deviation of a value column (0 for a single event)."""


@dataclass(frozen=True)
class Min(_Of):
    """Smallest value."""


@dataclass(frozen=True)
class Max(_Of):
    """Largest value."""


@dataclass(frozen=True)
class Last(_Of):
    """The value of the latest event with a value (NULL skipped; ties: the largest value)."""


@dataclass(frozen=True)
class DistinctCount(_Of):
    """Number of distinct values (NULL not counted)."""


@dataclass(frozen=True)
class FirstSeenCount(_Of):
    """Number of distinct values of ``of`` NEW in the window: values whose first event for
    the entity (before ``t``, among ``where``) falls in the window. A user's devices first
    used in the last 30 days, a device's users first seen on it: ``FirstSeenCount("30d",
    of="device_id")``. NULL not counted; without a window: DistinctCount."""


@dataclass(frozen=True)
class TimeSinceLast(Aggregation):
    """``t`` minus the latest event's time, in ``unit`` (``"d"``: days)."""

    unit: str = "d"


@dataclass(frozen=True)
class TimeSinceFirst(Aggregation):
    """``t`` minus the earliest event's time, in ``unit``."""

    unit: str = "d"


@dataclass(frozen=True)
class Share(_Of):
    """A vector: per value of ``vocabulary``, its share of the events (the feature's
    ``size`` must equal ``len(vocabulary)``). With ``half_life`` each event weighs
    ``0.5 ** (age / half_life)`` and shares are of the weights. No events: all 0."""

    vocabulary: tuple[str | int, ...] = ()
    half_life: str | float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.vocabulary:
            raise ValueError(f"Share(of={self.of!r}) needs its vocabulary")
        if self.half_life is not None:
            seconds(self.half_life)


@dataclass(frozen=True)
class Entropy(_Of):
    """Entropy (nats) of the distribution of ``of`` over the events."""


@dataclass(frozen=True)
class TopShare(_Of):
    """Share of the events that carry the most frequent value of ``of``."""


@dataclass(frozen=True)
class Ratio:
    """``numerator / max(denominator, min_denominator)`` of two aggregations.

    Smoothed towards a prior with ``prior_weight`` > 0 (pseudo-events at rate ``prior``):
    ``(numerator + prior_weight * prior) / max(denominator + prior_weight, min_denominator)``,
    where a numerator or denominator over no events counts 0, so an entity without history
    gets ``prior``. A merchant's chargeback rate: ``Ratio(Count("90d", time="chargeback_at"),
    Count("90d"), prior=0.01, prior_weight=20)``."""

    numerator: Aggregation
    denominator: Aggregation
    min_denominator: float = 1.0
    prior: float = 0.0
    prior_weight: float = 0.0

    def __post_init__(self) -> None:
        if not self.prior_weight >= 0:
            raise ValueError(f"Ratio(prior_weight={self.prior_weight!r}): expected >= 0")


@dataclass(frozen=True)
class Attribute:
    """A column of the group's entity table (``FeatureGroup.table``).

    With a ``vocabulary``: the value's index in it (a categorical attribute stored by its
    name, served as the index the model knows, e.g. a home country among the ISO codes); a
    value outside the vocabulary (or NULL) gives the feature's default. Strings compare as
    text, numbers as numbers."""

    column: str
    vocabulary: tuple[str | int | float, ...] = ()

    def __post_init__(self) -> None:
        identifier(self.column, "attribute")
        vocab = tuple(self.vocabulary)
        object.__setattr__(self, "vocabulary", vocab)
        kinds = {isinstance(v, str) for v in vocab}
        if len(kinds) > 1 or any(isinstance(v, bool) for v in vocab):
            raise ValueError(f"Attribute({self.column!r}) vocabulary: all strings or all numbers")


@dataclass(frozen=True)
class TimeSinceAttribute:
    """``max(t - column, 0)`` in ``unit``; ``column`` is a time of the entity table in
    ``column_unit`` (sign-up, listing)."""

    column: str
    unit: str = "d"
    column_unit: TimeUnit = "ms"

    def __post_init__(self) -> None:
        identifier(self.column, "attribute")


@dataclass(frozen=True)
class Expr:
    """A DuckDB SQL expression over features declared before it in the group, the entity
    table's attributes and ``t`` (the time, epoch ms), e.g. ``ln(1 + i_price)``."""

    sql: str


@dataclass(frozen=True)
class PercentileInGroup:
    """Percentile of ``of`` (a feature declared before) among the entities at the same time
    that share ``by`` (None: all) and satisfy ``among`` (SQL, None: all): 0 = lowest,
    1 = highest, ties share the lowest rank, a group of one is 1. Entities outside
    ``among`` get ``otherwise`` (None: the declared default). In point-in-time mode the
    population is the query rows of the same time."""

    of: str
    by: str | None = None
    among: str | None = None
    otherwise: float | None = None


Compute = Aggregation | Ratio | Attribute | TimeSinceAttribute | Expr | PercentileInGroup


@dataclass(frozen=True)
class GroupSource:
    """Where a feature group's values come from: the events aggregated per entity (keyed by
    the group's entity column of ``events``) and the entity table (the population and its
    attributes). An aggregation's ``time=`` picks another time column of the same events."""

    events: Events | None = None
    table: Table | None = None
    notes: tuple[str, ...] = field(default=())
