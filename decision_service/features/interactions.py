"""The recommendation use case's data contract: who interacted with which item, when.

A project that serves recommendations declares ``INTERACTIONS = Interactions(...)`` in its
features.py, naming its declared sources (features/declarative.py) and the columns the
recommendation jobs need beyond its feature groups:

  events     an Events source with the ``user_id`` and ``item_id`` keys and the event type
  users      a Table of users (``key`` = user id); users seen only in events are added
  items      a Table of the catalog (``key`` = item id); events on unknown items are dropped
             and counted (``offline/features/interactions.py`` reports them)
  positive   event types that are the goal (purchase, a rating of 4+): label 2 in training,
             every other event type label 1
  category   the items column holding the category index (into the project's CATEGORIES;
             -1 = none): the category filter, the per-category cap and category features
  price, stock, listed, signup   optional: item price and stock columns, the item's listing
             time and the user's sign-up time (without them: 0, in stock, the first event)

Nothing here reads data; offline/features/interactions.py loads it.
"""

from __future__ import annotations

from dataclasses import dataclass

from decision_service.features.declarative import Events, Table, Time, identifier, seconds


@dataclass(frozen=True)
class Interactions:
    events: Events
    users: Table
    items: Table
    positive: tuple[str, ...]
    category: str
    price: str | None = None
    stock: str | None = None
    listed: Time | None = None
    signup: Time | None = None

    def __post_init__(self) -> None:
        for entity in ("user_id", "item_id"):
            if entity not in self.events.keys:
                raise ValueError(f"Interactions: events {self.events.name!r} has no {entity!r} key")
        if self.events.event_type is None:
            raise ValueError(f"Interactions: events {self.events.name!r} declares no event_type")
        if isinstance(self.positive, str):
            object.__setattr__(self, "positive", (self.positive,))
        if not self.positive:
            raise ValueError("Interactions: positive must name at least one event type")
        if self.events.event_types:
            unknown = [p for p in self.positive if p not in self.events.event_types]
            if unknown:
                known = self.events.event_types
                raise ValueError(f"Interactions: positive {unknown} not in the event types {known}")
        for name in (self.category, self.price, self.stock):
            if name is not None:
                identifier(name, "Interactions column")


@dataclass(frozen=True)
class RecommendationOutcome:
    """An outcome a product backend reports about a recommended item (RecordOutcome ``type``).

    A project declares its own as ``RECOMMENDATION_OUTCOMES = (...)`` in features.py (default:
    impression, click, add_to_cart, purchase). ``label_window`` (e.g. ``"30m"``, ``"7d"``)
    makes it a training label: it counts when it happens within that long of the decision;
    None: recorded, never a label. ``marks_seen``: the item joins the user's seen set (the
    previously-seen filter). The first labelled outcome is the retrain target unless
    project.yaml ``settings.recommendation.target`` names another; every label adds to the
    evaluation's relevance."""

    name: str
    description: str = ""
    label_window: str | float | None = None
    marks_seen: bool = True

    def __post_init__(self) -> None:
        identifier(self.name, "outcome name")
        if self.label_window is not None:
            seconds(self.label_window)
