"""Watching the loop: shadow vs live, canary arms, drift, loop health, and the HTML report.

Everything here reads what the server and the offline jobs already write (the Parquet decision,
outcome and shadow logs; the registry's versions, their manifests and feature profiles) and
returns the plain results of ``offline/watch/results.py``; ``report.py`` draws them.
"""
