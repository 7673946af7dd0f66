"""Presentation: rich renderables, JSON and Graphviz. Renderers read reports; they never compute analyses."""
