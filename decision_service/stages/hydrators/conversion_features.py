"""Request-time conversion features + the stored profile -> the model row."""

from __future__ import annotations

import numpy as np

from decision_service.features.conversion import INPUT_DEFAULTS, inputs, request_vector
from decision_service.features.definitions import USER
from decision_service.stages.conversion_base import ConversionState


class ConversionFeatures:
    name = "features"

    def build(self, state: ConversionState) -> np.ndarray:
        """float32 [1, n model columns]. Contract: uses the server's receive time, never a
        client clock; the profile's defaults when it could not be read; a non-finite input
        (request arithmetic that overflowed) is replaced by its declared default and
        ``state.non_finite`` set (the flow flags it)."""
        r = state.request
        state.request_features = request_vector(
            r.cart_items,
            r.cart_value,
            r.session_page_views,
            r.session_seconds,
            r.context.surface,
            r.context.device,
            r.received_at_ms,
        )
        profile = state.profile.values[0] if state.profile is not None else USER.defaults
        state.inputs = inputs(profile, state.request_features)
        bad = ~np.isfinite(state.inputs)
        if bad.any():  # never reaches the model or the log: the declared defaults
            state.inputs[bad] = INPUT_DEFAULTS[bad]
            state.non_finite = True
        return state.artifacts.row(state.inputs)
