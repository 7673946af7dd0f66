"""DTensor and FSDP2 models read on one rank without communicating: placements, meshes and local shards
(``dtensor``), and the model-level facts, findings and checksums of this rank (``ranks``). Returns
``report.distributed`` records; only ``modscope.api.distributed`` and ``modscope.cli.distributed`` talk to
other ranks.
"""
