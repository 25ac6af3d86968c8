"""The machine side of Sift: a plain-Python core (learning/core) wrapped by a Django app.

This file must stay free of Django imports: ``python -m learning.simulate`` runs without Django.
"""
