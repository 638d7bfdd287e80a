"""Compiled and fused kernels for ranking and MODEL2VEC training.

Each kernel computes something :mod:`t2v_hub.selection.distances` defines, faster
(numba when installed, chunked torch otherwise), and is tested against that one
reference definition. Imports only torch, numba and ``selection.distances``.
"""
