"""side_effects stages: run after the answer is built; they only enqueue, never block."""
