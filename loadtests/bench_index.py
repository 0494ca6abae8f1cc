"""Recall@k against exact search and per-query latency of the ANN index choices, on a world's
serving embeddings (after bootstrap). Picks the knobs the serving index should use.

    python -m loadtests.bench_index --data-dir data/bench
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import faiss
import numpy as np

from decision_service.models.registry import ModelRegistry
from decision_service.models.serving import knobs_of
from offline.features.build_index import measure_recall, sample_queries
from offline.features.materialize import load_serving_state


def latency_ms(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[float, float]:
    times = []
    for q in queries:
        t0 = time.perf_counter()
        index.search(q[None, :], k)
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times), float(np.percentile(times, 99))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loadtests.bench_index", description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=Path("data/bench"))
    ap.add_argument("--k", type=int, default=200)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--ivf", action="store_true", help="also build and measure IVF (nlist = sqrt(n))")
    args = ap.parse_args(argv)
    faiss.omp_set_num_threads(1)
    _, emb = load_serving_state(args.data_dir / "world")
    items = np.ascontiguousarray(emb.items, np.float32)
    queries = sample_queries(emb.users, args.queries, seed=1)
    flat = faiss.IndexFlatIP(items.shape[1])
    flat.add(items)
    exact_scores, exact = flat.search(queries, args.k)

    def recall_of(index: faiss.Index) -> float:  # tie-aware, as the bootstrap measures it
        return measure_recall(index, exact, queries, args.k, items, exact_scores)

    rows = []
    med, p99 = latency_ms(flat, queries[:50], args.k)
    rows.append({"index": "flat (exact)", "recall": 1.0, "median_ms": med, "p99_ms": p99})
    version = ModelRegistry(args.data_dir / "registry").current("recommendation")
    loaded = faiss.read_index(str(version.file("index.faiss")))  # searched: ids = catalog rows
    served = knobs_of(loaded)  # a view: ``loaded`` must stay alive
    built = version.manifest.get("index", {})
    print(f"served index: {built.get('type')} {built.get('params')} over {loaded.ntotal:,} of "
          f"{len(items):,} items")
    if hasattr(served, "hnsw"):
        for ef in (64, 128, 200, 256, 400):
            served.hnsw.efSearch = ef
            med, p99 = latency_ms(loaded, queries, args.k)
            rows.append({"index": f"HNSW{served.hnsw.nb_neighbors(1)} efSearch={ef}",
                         "recall": recall_of(loaded), "median_ms": med, "p99_ms": p99})
    if args.ivf or not hasattr(served, "hnsw"):
        ivf, searched = (served, loaded) if hasattr(served, "nprobe") else (None, None)
        if ivf is None:
            ids = np.flatnonzero(np.any(items != 0, axis=1)).astype(np.int64)  # as build_index
            nlist = int(np.sqrt(len(ids)))
            ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(items.shape[1]), items.shape[1], nlist,
                                     faiss.METRIC_INNER_PRODUCT)
            faiss.omp_set_num_threads(2)
            pick = np.random.default_rng(0).choice(ids, min(len(ids), nlist * 64), replace=False)
            ivf.train(items[np.sort(pick)])
            searched = faiss.IndexIDMap(ivf)
            searched.add_with_ids(items[ids], ids)
            faiss.omp_set_num_threads(1)
        for nprobe in (16, 32, 64, 96, 128):
            ivf.nprobe = nprobe
            med, p99 = latency_ms(searched, queries, args.k)
            rows.append({"index": f"IVF{ivf.nlist} nprobe={nprobe}",
                         "recall": recall_of(searched), "median_ms": med, "p99_ms": p99})
    print(f"{'index':<28}{'recall@' + str(args.k):>12}{'median ms':>12}{'p99 ms':>10}")
    for r in rows:
        print(f"{r['index']:<28}{r['recall']:>12.4f}{r['median_ms']:>12.3f}{r['p99_ms']:>10.3f}")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
