"""Presentation: rich renderables, JSON, Graphviz and file output. Renderers read reports (and base helpers)
and never compute an analysis; ``views`` registers which renderer shows which report, the one seam through
which reports display themselves.
"""
