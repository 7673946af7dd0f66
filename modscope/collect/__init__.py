"""Collectors: pure functions and context managers that read a model and return plain data.

This package is the only place where hooks are registered (see ``modscope.hooks``).
"""
