"""Bundled example models: classic nn.Module tutorial networks for trying out modscope."""
