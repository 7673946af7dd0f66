"""Architecture graphs from one forward pass as it really ran: which module or tensor op fed which
(``dataflow``), simplified so a person can read it (``graph_fold``), with each module's key hyper-parameters
in a few characters (``layer_info``). Reads a model and inputs; returns the flow that ``modscope.api.graphs``
turns into a ``ModelGraph``.
"""
