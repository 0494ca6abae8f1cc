"""User and item embeddings by implicit matrix factorisation (truncated SVD) of interactions.

Contract: ``train_embeddings(world, cutoff_ms)`` uses only events strictly before the
cutoff; returns float32 [n_users, dim] and [n_items, dim] in world row order, with
``user_emb @ item_emb.T`` approximating the weighted interaction matrix (U*sqrt(S), V*sqrt(S)).
Users and items without history get zero vectors. Deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from decision_service.features.definitions import EMBEDDING_DIM

if TYPE_CHECKING:  # the batch jobs read a World's events; the loop never imports the simulator
    from offline.simulation.world import World


@dataclass(frozen=True)
class Embeddings:
    """Factorisation result; ``singular_values`` are in descending order."""

    users: np.ndarray            # float32 [n_users, dim]
    items: np.ndarray            # float32 [n_items, dim]
    singular_values: np.ndarray  # float64 [dim]
    cutoff_ms: int
    seconds: float


def interaction_matrix(
    world: World, cutoff_ms: int, purchase_weight: float = 4.0, item_idf: float = 0.5
) -> sp.csr_matrix:
    """Weighted user x item matrix from events before ``cutoff_ms``.

    Cell = log1p(clicks + purchase_weight * purchases), then each item column is scaled by
    ``idf ** item_idf`` (idf = log(n_users / (1 + item's users))) so that the head does not
    swamp the factors; ``item_idf = 0`` disables it.
    """
    sl = world.events_before(cutoff_ms)
    w = np.where(world.event_purchase[sl], purchase_weight, 1.0)
    m = sp.coo_matrix(
        (w, (world.event_user[sl], world.event_item[sl])), shape=(world.n_users, world.n_items)
    ).tocsr()
    m.sum_duplicates()
    m.data = np.log1p(m.data)
    if item_idf:
        df = np.bincount(m.indices, minlength=world.n_items)
        idf = np.log(world.n_users / (1.0 + df)).clip(0.1, None) ** item_idf
        m = m @ sp.diags(idf)
    return m.tocsr()


def train_embeddings(
    world: World,
    cutoff_ms: int,
    dim: int = EMBEDDING_DIM,
    purchase_weight: float = 4.0,
    item_idf: float = 0.5,
    seed: int = 0,
) -> Embeddings:
    """Truncated SVD (ARPACK, fixed start vector) of ``interaction_matrix``."""
    t0 = time.perf_counter()
    m = interaction_matrix(world, cutoff_ms, purchase_weight, item_idf).astype(np.float64)
    k = min(dim, min(m.shape) - 1, max(m.nnz - 1, 0))
    users = np.zeros((world.n_users, dim), np.float32)
    items = np.zeros((world.n_items, dim), np.float32)
    s_out = np.zeros(dim)
    if k > 0:
        v0 = np.random.default_rng(seed).uniform(-1.0, 1.0, size=min(m.shape))
        u, s, vt = svds(m, k=k, v0=v0, solver="arpack", random_state=seed)
        order = np.argsort(-s)
        u, s, vt = u[:, order], s[order], vt[order]
        # Fix each factor's sign (largest-magnitude item loading positive): stable outputs.
        flip = np.sign(vt[np.arange(k), np.abs(vt).argmax(axis=1)])
        u, vt = u * flip, vt * flip[:, None]
        root = np.sqrt(s)
        users[:, :k] = u * root
        items[:, :k] = vt.T * root
        s_out[:k] = s
    users[np.diff(m.indptr) == 0] = 0.0
    items[np.bincount(m.indices, minlength=world.n_items) == 0] = 0.0
    return Embeddings(users, items, s_out, int(cutoff_ms), time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m offline.features.embeddings", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--world", default="data/world", help="world directory")
    ap.add_argument("--cutoff-day", type=float, default=None,
                    help="use events before this many days after the start (default: world now)")
    ap.add_argument("--dim", type=int, default=EMBEDDING_DIM)
    ap.add_argument("--out", default=None, help="save users/items to this .npz file")
    args = ap.parse_args(argv)
    from offline.simulation.world import World

    world = World.load(args.world)
    cutoff = world.now_ms if args.cutoff_day is None else world.day_ms(args.cutoff_day)
    emb = train_embeddings(world, cutoff, dim=args.dim)
    nz_u = int((np.abs(emb.users).sum(axis=1) > 0).sum())
    nz_i = int((np.abs(emb.items).sum(axis=1) > 0).sum())
    print(f"embeddings dim {args.dim}: {nz_u:,}/{world.n_users:,} users and "
          f"{nz_i:,}/{world.n_items:,} items with history, in {emb.seconds:.2f} s; "
          f"top singular values {np.round(emb.singular_values[:5], 2).tolist()}")
    if args.out:
        np.savez(args.out, users=emb.users, items=emb.items, singular_values=emb.singular_values)
        print(f"  saved -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
