"""The ground every room stands on: walking a module tree without recursion (``walk``) and writing numbers,
bytes and shapes as short text (``text``). It reads ``nn.Module`` objects and plain values and returns plain
values; it imports nothing from modscope but ``modscope.errors``.
"""
