"""The torchrun harness itself: a rendezvous port taken between choosing it and listening on it is retried."""
from __future__ import annotations

import socket

import distributed_harness
import pytest
import torch


@pytest.mark.distributed
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without torch.distributed")
def test_a_port_taken_before_torchrun_listens_on_it_is_retried(monkeypatch, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()  # what a parallel test's process could be doing on the port chosen
        chosen = iter([taken.getsockname()[1]])
        real = distributed_harness.free_port
        monkeypatch.setattr(distributed_harness, "free_port", lambda: next(chosen, None) or real())
        script = tmp_path / "rank.py"
        # one write per rank: the ranks share stdout, and print() writes its arguments one by one
        script.write_text("import os, sys\nsys.stdout.write(f\"rank {os.environ['RANK']}\\n\")\n")
        result = distributed_harness.torchrun(str(script), timeout=120)
    assert result.returncode == 0, result.worker_lines()[-2000:]
    assert sorted(result.stdout.split("\n"))[-2:] == ["rank 0", "rank 1"]
    assert next(chosen, None) is None  # the taken port was handed out first
