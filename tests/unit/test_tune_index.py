"""Search-time index knobs: configured value, else the one the bootstrap measured."""

from __future__ import annotations

import faiss
import numpy as np

from decision_service.config import ServiceConfig
from decision_service.models.serving import tune_index


def _mapped(inner: faiss.Index) -> faiss.Index:
    x = np.random.default_rng(0).random((400, 8), dtype=np.float32)
    if not inner.is_trained:
        inner.train(x)
    mapped = faiss.IndexIDMap(inner)
    mapped.add_with_ids(x, np.arange(1000, 1400, dtype=np.int64))
    return mapped


def test_measured_knobs_apply_through_the_id_map_unless_configured():
    hnsw = faiss.IndexHNSWFlat(8, 16, faiss.METRIC_INNER_PRODUCT)
    index = _mapped(hnsw)
    tune_index(index, ServiceConfig(), {"efSearch": 333})
    assert hnsw.hnsw.efSearch == 333
    tune_index(index, ServiceConfig(hnsw_ef_search=77), {"efSearch": 333})
    assert hnsw.hnsw.efSearch == 77

    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(8), 8, 4, faiss.METRIC_INNER_PRODUCT)
    index = _mapped(ivf)
    tune_index(index, ServiceConfig(), {"nlist": 4, "nprobe": 3})
    assert ivf.nprobe == 3
    tune_index(index, ServiceConfig(), {})  # an old manifest without params: FAISS-typical default
    assert ivf.nprobe == 16
    _, ids = index.search(np.ones((1, 8), np.float32), 5)
    assert ids.min() >= 1000  # ids are the explicit ones (catalog rows), not positions


def test_knobs_reach_an_ivf_inside_exact_re_ranking():
    base = faiss.index_factory(8, "IVF4,PQ4x4fs", faiss.METRIC_INNER_PRODUCT)
    refine = faiss.IndexRefineFlat(base)
    index = _mapped(refine)
    tune_index(index, ServiceConfig(), {"nprobe": 3})
    assert faiss.extract_index_ivf(base).nprobe == 3
    tune_index(index, ServiceConfig(ivf_nprobe=2), {"nprobe": 3})
    assert faiss.extract_index_ivf(base).nprobe == 2
