"""Turning what a user typed into objects: ``target`` resolves TARGET (``file.py:Net``, ``pkg.mod:factory``,
a saved model, a TorchScript archive with ``--trust``) into an ``nn.Module``, and ``inputs`` turns input specs
(``1,3,224,224:float16``) and Python values into ``ModelInputs``. Hugging Face folders and ``hf:`` specs are
built by ``hub`` (the cache: ``hf_cache``; keys and ties: ``hub_keys``), ``timm:NAME`` by ``timm_target``, and
``hub_inputs`` derives their inputs from the config. Checkpoint files are read by ``modscope.checkpoint``.
``suggest`` and ``source_names`` say what to give when a TARGET names nothing (a .py file is read with ``ast``,
never imported); ``input_errors`` explains a forward that refused the input it was made from.
Nothing here runs a model or changes one.
"""
