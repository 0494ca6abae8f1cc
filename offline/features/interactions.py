"""Loads a project's declared interactions (decision_service/features/interactions.py) into the
in-memory ``World`` arrays the recommendation jobs run on (embeddings, ranker, index, seen sets).

One DuckDB pass per source: users, items (catalog order), events (time order, event type ->
positive flag). Ids are the sources' own, as strings; users that appear only in events are
appended; events on items outside the catalog are dropped and counted.

On failure: SourceError naming the file and the column (offline/features/compiler.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from decision_service.features.declarative import Time
from decision_service.features.interactions import Interactions
from offline.features.compiler import (
    SourceError,
    _lit,
    _q,
    connect,
    events_relation,
    fetch,
    floats,
    resolve,
    scan_sql,
    time_sql,
)
from offline.simulation.world import DAY_MS, World, WorldConfig


@dataclass(frozen=True)
class LoadReport:
    users: int
    users_from_events: int
    items: int
    events: int
    positives: int
    events_on_unknown_items: int
    start_ms: int
    now_ms: int


def load_interactions(
    decl: Interactions, base_dir: str | Path, name: str = "project"
) -> tuple[World, LoadReport]:
    """(World, LoadReport) of the declared sources under ``base_dir``.

    The world starts at the first event's day (UTC midnight) and its "now" is one ms after
    the last event; ``world.directory`` is ``base_dir`` (where the groups' sources resolve)."""
    con = connect()
    ev, users_t, items_t = decl.events, decl.users, decl.items

    def run(sql: str, path: str, what: str) -> dict[str, np.ndarray]:
        return fetch(con, sql, path, base_dir, what)

    def opt_time(t: Time | None, alias: str) -> str:
        return "NULL" if t is None else time_sql(t.column, t, alias)

    u = run(
        f"SELECT CAST(u.{_q(users_t.key)} AS VARCHAR) AS id, {opt_time(decl.signup, 'u')} AS signup "
        f"FROM {scan_sql(users_t, base_dir)} u",
        users_t.path,
        "users",
    )
    price = f"CAST(i.{_q(decl.price)} AS FLOAT)" if decl.price else "0.0"
    stock = f"CAST(i.{_q(decl.stock)} AS INTEGER)" if decl.stock else "1"
    it = run(
        f"SELECT CAST(i.{_q(items_t.key)} AS VARCHAR) AS id, "
        f"coalesce(CAST(i.{_q(decl.category)} AS INTEGER), -1) AS category, {price} AS price, "
        f"{stock} AS stock, {opt_time(decl.listed, 'i')} AS listed FROM {scan_sql(items_t, base_dir)} i",
        items_t.path,
        "items",
    )
    positive = ", ".join(_lit(p) for p in decl.positive)
    events_sql, _ = events_relation(ev, base_dir, con)  # derived columns after lookups, as compiled
    e = run(
        f"SELECT CAST(e.{_q(ev.keys['user_id'])} AS VARCHAR) AS u, "
        f"CAST(e.{_q(ev.keys['item_id'])} AS VARCHAR) AS i, "
        f"{time_sql(ev.time.column, ev.time)} AS ts, "
        f"CAST(e.{_q(ev.event_type or '')} AS VARCHAR) IN ({positive}) AS pos "
        f"FROM {events_sql} e ORDER BY ts, u, i",
        ev.path,
        "events",
    )
    if not len(e["ts"]):
        raise SourceError(f"{resolve(ev.path, base_dir)}: no events")
    user_ids = np.asarray(u["id"], dtype=object)
    item_ids = np.asarray(it["id"], dtype=object)
    # ids -> rows, vectorised (a 10M-event source must not loop in Python)
    ev_users, ev_items = pa.array(e["u"], pa.string()), pa.array(e["i"], pa.string())
    seen = pc.unique(ev_users)
    extra = seen.filter(pc.invert(pc.is_in(seen, value_set=pa.array(user_ids, pa.string()))))
    extra = np.asarray(extra.to_pylist(), dtype=object)
    user_ids = np.concatenate([user_ids, extra])
    ev_user = pc.index_in(ev_users, value_set=pa.array(user_ids, pa.string())).to_numpy(zero_copy_only=False)
    ev_item = pc.fill_null(pc.index_in(ev_items, value_set=pa.array(item_ids, pa.string())), -1).to_numpy()
    ev_item = np.asarray(ev_item, np.int64)
    known = ev_item >= 0
    ev_user = np.asarray(ev_user, np.int64)[known]
    ev_item, ev_ms, ev_pos = ev_item[known], np.asarray(e["ts"], np.int64)[known], np.asarray(e["pos"])[known]

    first_ms, last_ms = int(ev_ms[0]), int(ev_ms[-1])
    start_ms = first_ms - first_ms % DAY_MS
    now_ms = last_ms + 1
    first_event_of_user = np.full(len(user_ids), now_ms, np.int64)
    np.minimum.at(first_event_of_user, ev_user, ev_ms)
    first_event_of_item = np.full(len(item_ids), now_ms, np.int64)
    np.minimum.at(first_event_of_item, ev_item, ev_ms)
    signup = floats(u["signup"]) if decl.signup else np.full(len(u["id"]), np.nan)  # NULL: NaN
    signup = np.concatenate([signup, np.full(len(extra), np.nan)])
    signup = np.where(np.isnan(signup), first_event_of_user, signup).astype(np.int64)
    listed = floats(it["listed"]) if decl.listed else np.full(len(item_ids), np.nan)
    listed = np.where(np.isnan(listed), np.minimum(first_event_of_item, start_ms), listed).astype(np.int64)
    days = max(1, int(np.ceil((now_ms - start_ms) / DAY_MS)))
    world = World(
        config=WorldConfig(preset=name, n_users=len(user_ids), n_items=len(item_ids), days=days),
        start_ms=start_ms,
        now_ms=now_ms,
        user_ids=user_ids,
        user_signup_ms=signup,
        item_ids=item_ids,
        item_category=np.asarray(it["category"], np.int16),
        item_price=np.nan_to_num(np.asarray(it["price"], np.float32)),
        item_stock=np.asarray(it["stock"], np.int32),
        item_listed_ms=listed,
        event_user=ev_user.astype(np.int32),
        event_item=ev_item.astype(np.int32),
        event_purchase=ev_pos.astype(bool),
        event_ms=ev_ms,
        directory=Path(base_dir),
    )
    report = LoadReport(
        users=len(u["id"]),
        users_from_events=len(extra),
        items=len(item_ids),
        events=int(known.sum()),
        positives=int(ev_pos.sum()),
        events_on_unknown_items=int((~known).sum()),
        start_ms=start_ms,
        now_ms=now_ms,
    )
    return world, report
