"""policies stages: turn a score and rules into an action with reasons (e.g. APPROVE / REVIEW / DECLINE)."""
