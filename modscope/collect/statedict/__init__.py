"""State dicts compared: what a checkpoint holds from its metadata (``checkpoint``), two state dicts key by key
(``diff``) and value by value in bounded memory (``values``), names that moved (``renames``: DDP, compile,
prefixes) and whether a checkpoint loads into a model (``compat``). Reads checkpoints opened by
``modscope.checkpoint`` and models; returns ``report.checkpoint`` and ``report.diff`` records.
"""
