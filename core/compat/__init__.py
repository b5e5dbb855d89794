"""Compatibility shims for third-party libraries whose releases lag behind torch.

Import heavy optional libraries through these modules (e.g. ``from crs.compat.dgl import dgl``)
so that a workaround lives in exactly one place.
"""
