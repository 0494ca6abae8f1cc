"""FAISS inner-product index over item embeddings, chosen and tuned by measured recall.

Contract: FAISS id == catalog row (ids are given explicitly, ``IndexIDMap``). Items whose
embedding is all zeros (no interactions yet) are left out: they score 0 against every user,
so they can only pad a candidate list, and on the 1M-item bench world (more than half of
them cold) they degraded both index kinds: every zero vector lands in one IVF list, and HNSW
builds a degenerate graph among them (BENCHMARKS.md). Cold items reach users through the
fallback and exploration sources. The returned ``IndexInfo.recall_at_k`` is the mean
overlap of the index's top-k with exact search over ALL items, for a sample of (non-zero)
query vectors.

Choice (``kind="auto"``): exact ``IndexFlatIP`` up to ``flat_max_items``; above it, IVF is
tried first (builds in seconds) and kept if its recall reaches ``target_recall``, else HNSW,
and whichever recalls more is kept. IVF storage (``ivf_storage``), measured on the 1M-item
bench world (498k indexed items, recall@200 / median search, one thread, BENCHMARKS.md):
  "pq4fs" (default)  4-bit fast-scan PQ codes, the top ``refine_k_factor`` x k re-ranked
                     with exact inner products: nprobe 128 -> 0.897 / 0.35 ms
  "sq8"              8-bit scalar-quantized lists: nprobe 96 -> 0.898 / 0.61 ms
  "flat"             float32 lists: nprobe 64 -> 0.858 / 0.86 ms
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import faiss
import numpy as np

from offline.features.embeddings import train_embeddings


@dataclass(frozen=True)
class IndexConfig:
    """How to build the index; ``kind`` is "auto", "flat", "ivf" or "hnsw"."""

    kind: str = "auto"
    flat_max_items: int = 100_000
    target_recall: float = 0.95
    k: int = 200
    sample_queries: int = 500
    ivf_nlist: int | None = None       # default: sqrt(n), at most n / 39
    ivf_train_per_list: int = 64       # k-means training points per list
    ivf_nprobe: tuple[int, ...] = (16, 32, 64, 96, 128)
    ivf_storage: str = "pq4fs"         # "pq4fs", "sq8" or "flat" (see the module docstring)
    refine_k_factor: int = 8           # pq4fs: candidates re-ranked exactly = k_factor x k
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: tuple[int, ...] = (256, 400)
    threads: int = 0                   # 0 = FAISS default
    seed: int = 0


@dataclass
class IndexInfo:
    type: str
    params: dict[str, Any]
    recall_at_k: float
    k: int
    build_seconds: float
    n_items: int  # indexed (non-zero) items
    tried: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["recall_at_200" if self.k == 200 else f"recall_at_{self.k}"] = self.recall_at_k
        return d


def sample_queries(user_emb: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Up to ``n`` non-zero rows of ``user_emb`` (float32), deterministically sampled."""
    rows = np.flatnonzero(np.abs(user_emb).sum(axis=1) > 0)
    if len(rows) > n:
        rows = np.sort(np.random.default_rng(seed).choice(rows, n, replace=False))
    return np.ascontiguousarray(user_emb[rows], dtype=np.float32)


def measure_recall(
    index: faiss.Index,
    exact: np.ndarray,
    queries: np.ndarray,
    k: int,
    items: np.ndarray | None = None,
    exact_scores: np.ndarray | None = None,
) -> float:
    """Mean |approx top-k ∩ exact top-k| / k over ``queries``.

    With ``items`` and ``exact_scores`` (the exact search's inner products) it is tie-aware:
    a returned item counts when its true score reaches the exact k-th score. Many items
    share a score (e.g. all items without an embedding score 0), and which of the tied ones
    exact search lists is arbitrary, so plain id overlap under-counts.
    """
    if not len(queries):
        return 1.0
    _, got = index.search(queries, k)
    if items is None or exact_scores is None:
        hits = [len(np.intersect1d(g[g >= 0], e[e >= 0])) / max((e >= 0).sum(), 1)
                for g, e in zip(got, exact, strict=True)]
        return float(np.mean(hits))
    out = []
    for q, g, e, d in zip(queries, got, exact, exact_scores, strict=True):
        g = g[g >= 0]
        kth = d[(e >= 0)].min(initial=np.inf)
        scores = items[g] @ q
        out.append(min(1.0, float(np.sum(scores >= kth - 1e-6)) / max((e >= 0).sum(), 1)))
    return float(np.mean(out))


def build_index(
    item_emb: np.ndarray, queries: np.ndarray, config: IndexConfig = IndexConfig()
) -> tuple[faiss.Index, IndexInfo]:
    """Builds the index over ``item_emb`` (row = FAISS id) and measures its recall@k."""
    if config.threads:
        faiss.omp_set_num_threads(config.threads)
    x = np.ascontiguousarray(item_emb, dtype=np.float32)
    d = x.shape[1]
    ids = np.flatnonzero(np.any(x != 0, axis=1)).astype(np.int64)
    xs = x[ids]
    n = len(ids)
    k = min(config.k, len(x))
    t0 = time.perf_counter()
    exact_index = faiss.IndexFlatIP(d)
    exact_index.add(x)
    exact_scores, exact = exact_index.search(queries, k)
    del exact_index
    kind = config.kind
    if kind == "auto":
        kind = "flat" if n <= config.flat_max_items else "ivf+hnsw"

    def with_ids(index: faiss.Index) -> faiss.Index:
        mapped = faiss.IndexIDMap(index)
        mapped.add_with_ids(xs, ids)
        return mapped

    def measure_recall(index: faiss.Index, exact: np.ndarray, queries: np.ndarray, k: int) -> float:
        return _recall(index, exact, queries, k, x, exact_scores)

    if kind == "flat":
        flat = with_ids(faiss.IndexFlatIP(d))
        r = measure_recall(flat, exact, queries, k)
        return flat, IndexInfo("IndexFlatIP", {}, r, k, time.perf_counter() - t0, n)
    tried: list[dict[str, Any]] = []
    if "ivf" in kind:
        nlist = config.ivf_nlist or int(max(min(np.sqrt(n), n // 39), 1))
        ivf, searched = _ivf(config, d, nlist)
        ivf_type = type(ivf).__name__ + ("+refine" if searched is not ivf else "")
        ivf.cp.seed = config.seed
        train = xs
        if n > nlist * config.ivf_train_per_list:
            pick = np.random.default_rng(config.seed).choice(
                n, nlist * config.ivf_train_per_list, replace=False)
            train = xs[np.sort(pick)]
        searched.train(train)
        ivf_mapped = with_ids(searched)
        for nprobe in config.ivf_nprobe:
            ivf.nprobe = nprobe
            r = measure_recall(ivf_mapped, exact, queries, k)
            tried.append({"type": ivf_type, "nlist": nlist, "nprobe": nprobe, "recall": r})
            if r >= config.target_recall:
                return ivf_mapped, IndexInfo(ivf_type, _ivf_params(config, nlist, nprobe), r, k,
                                      time.perf_counter() - t0, n, tried)
    if "hnsw" in kind:
        hnsw = faiss.IndexHNSWFlat(d, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = config.hnsw_ef_construction
        hnsw_mapped = with_ids(hnsw)
        best: tuple[float, int] = (-1.0, config.hnsw_ef_search[0])
        for ef in config.hnsw_ef_search:
            hnsw.hnsw.efSearch = ef
            r = measure_recall(hnsw_mapped, exact, queries, k)
            tried.append({"type": "IndexHNSWFlat", "M": config.hnsw_m, "efSearch": ef, "recall": r})
            best = max(best, (r, ef))
            if r >= config.target_recall:
                break
        hnsw.hnsw.efSearch = best[1]
        ivf_recall = max((t["recall"] for t in tried if t["type"].startswith("IndexIVF")), default=-1.0)
        if ivf_recall <= best[0]:
            params = {"M": config.hnsw_m, "efConstruction": config.hnsw_ef_construction,
                      "efSearch": best[1]}
            return hnsw_mapped, IndexInfo("IndexHNSWFlat", params, best[0], k, time.perf_counter() - t0,
                                   n, tried)
        # Neither reached the target and IVF (widest probe) recalls more: keep IVF.
    # IVF never reached the target: keep the widest probe.
    ivf_best = [t for t in tried if t["type"].startswith("IndexIVF")][-1]
    return ivf_mapped, IndexInfo(ivf_type, _ivf_params(config, nlist, ivf.nprobe),
                          ivf_best["recall"], k, time.perf_counter() - t0, n, tried)


_recall = measure_recall


def _ivf(config: IndexConfig, d: int, nlist: int) -> tuple[faiss.IndexIVF, faiss.Index]:
    """(the IVF index whose nprobe is tuned, the index to train, fill and search)."""
    if config.ivf_storage == "pq4fs":
        base = faiss.index_factory(d, f"IVF{nlist},PQ{d // 2}x4fs", faiss.METRIC_INNER_PRODUCT)
        refine = faiss.IndexRefineFlat(base)
        refine.k_factor = config.refine_k_factor
        return faiss.downcast_index(faiss.extract_index_ivf(base)), refine
    quantizer = faiss.IndexFlatIP(d)
    if config.ivf_storage == "sq8":
        ivf = faiss.IndexIVFScalarQuantizer(
            quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    elif config.ivf_storage == "flat":
        ivf = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    else:
        raise ValueError(f"ivf_storage must be 'pq4fs', 'sq8' or 'flat', got {config.ivf_storage!r}")
    return ivf, ivf


def _ivf_params(config: IndexConfig, nlist: int, nprobe: int) -> dict[str, Any]:
    params: dict[str, Any] = {"nlist": nlist, "nprobe": nprobe, "storage": config.ivf_storage}
    if config.ivf_storage == "pq4fs":
        params["k_factor"] = config.refine_k_factor
    return params


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m offline.features.build_index", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--world", default="data/world", help="world directory")
    ap.add_argument("--kind", default="auto", choices=["auto", "flat", "ivf", "hnsw"])
    ap.add_argument("--flat-max-items", type=int, default=IndexConfig.flat_max_items)
    ap.add_argument("--out", default=None, help="write the index to this file")
    args = ap.parse_args(argv)
    from offline.simulation.world import World

    world = World.load(args.world)
    emb = train_embeddings(world, world.now_ms)
    queries = sample_queries(emb.users, IndexConfig.sample_queries)
    cfg = IndexConfig(kind=args.kind, flat_max_items=args.flat_max_items)
    index, info = build_index(emb.items, queries, cfg)
    print(f"index {info.type} {info.params} over {info.n_items:,} items: "
          f"recall@{info.k} = {info.recall_at_k:.4f} (built in {info.build_seconds:.1f} s)")
    for t in info.tried:
        print(f"  tried {t}")
    if args.out:
        faiss.write_index(index, args.out)
        print(f"  saved -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
