"""Example data generators: seeded synthetic worlds standing in for a real business.

``world`` is the e-commerce world (users, items, interactions and the true tastes behind them)
and ``fraud_world`` the payments world (parties, transactions, labelled fraud patterns). They
produce the inputs the other offline roles read and the ground truth demos and flywheel runs
answer with; nothing here trains, serves or writes to Redis.
"""
