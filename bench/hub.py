"""A Llama-3-70B-shaped Hugging Face folder (issue #16): ``python -m bench.hub``; prints markdown tables.

The folder is written here (``config.json``; a second copy also holds header-only sharded safetensors, valid
headers and holes for the data, as bench/checkpoint.py makes them): nothing is downloaded. Measured, each
in a fresh process so that imports count as a user pays them:

1. ``modscope summary DIR --seq-len 4096 --json`` (the default input at sequence 4096, on meta) against the
   same information the usual way: ``AutoModelForCausalLM.from_config`` under ``torch.device("meta")`` plus
   ``torchinfo.summary`` on a meta input of the same shape. Target: <= 1.0x.
2. Peak RSS of that command against ``import torch, transformers`` alone. Target: within 300 MB.
3. The same command on the folder with weights, where ``summary`` also checks them against the
   architecture (headers only). Target: the check adds < 0.5 s.
"""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import checkpoint  # noqa: E402
from bench.forward import _peak_rss  # noqa: E402

SEQUENCE = 4096
CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256, "hidden_size": 8192,
    "intermediate_size": 28672, "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
    "max_position_embeddings": 8192, "rope_theta": 500000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "bos_token_id": 128000, "eos_token_id": 128001,
}
BASELINE = """
import sys, torch, transformers, torchinfo
config = transformers.AutoConfig.from_pretrained(sys.argv[1])
with torch.device("meta"):
    model = transformers.AutoModelForCausalLM.from_config(config)
ids = torch.zeros(1, int(sys.argv[2]), dtype=torch.long, device="meta")
torchinfo.summary(model, input_data={"input_ids": ids}, device="meta", verbose=0)
"""
IMPORTS = "import torch, transformers"


def write_folders(root: Path) -> tuple[Path, Path]:
    bare, weighted = root / "config-only", root / "with-weights"
    bare.mkdir()
    (bare / "config.json").write_text(json.dumps(CONFIG))
    checkpoint.LLAMA_70B["vocab"] = CONFIG["vocab_size"]  # Llama-3's vocabulary on Llama-2-70B's layout
    checkpoint.write_header_only_index(weighted, checkpoint.llama_70b_shapes())
    (weighted / "config.json").write_text(json.dumps(CONFIG))
    return bare, weighted


def main(rounds: int = 3) -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else rounds
    with tempfile.TemporaryDirectory() as tmp:
        bare, weighted = write_folders(Path(tmp))
        summary = [sys.executable, "-m", "modscope", "summary"]
        tail = ["--seq-len", str(SEQUENCE), "--json"]
        commands = {
            "modscope summary DIR (config only)": [*summary, str(bare), *tail],
            "modscope summary DIR (with sharded weights: also checks them)": [*summary, str(weighted), *tail],
            "from_config on meta + torchinfo.summary": [sys.executable, "-c", BASELINE, str(bare), str(SEQUENCE)],
            "import torch, transformers": [sys.executable, "-c", IMPORTS],
        }
        results: dict[str, list] = {name: [] for name in commands}
        for _ in range(rounds):  # interleaved: a machine getting busier or quieter affects all alike
            for name, cmd in commands.items():
                results[name].append(_peak_rss(cmd))
    wall = {name: statistics.median(w for _, w in runs) for name, runs in results.items()}
    rss = {name: max(r for r, _ in runs) for name, runs in results.items()}
    print(f"Llama-3-70B-shaped config (70.6B parameters), default input at sequence {SEQUENCE}; wall seconds, "
          f"median of {rounds} fresh processes; peak RSS, the highest\n")
    print("| command | wall s | peak RSS MB | vs baseline |\n| --- | --- | --- | --- |")
    baseline = wall["from_config on meta + torchinfo.summary"]
    for name in commands:
        ratio = f"**{wall[name] / baseline:.2f}x**" if name.startswith("modscope") else ""
        print(f"| {name} | {wall[name]:.2f} | {rss[name]:.0f} | {ratio} |")
    extra = (wall["modscope summary DIR (with sharded weights: also checks them)"]
             - wall["modscope summary DIR (config only)"])
    over = rss["modscope summary DIR (config only)"] - rss["import torch, transformers"]
    print(f"\nThe weights check adds {extra:+.2f} s (target < 0.5 s); the command's peak RSS is {over:.0f} MB above "
          "importing torch and transformers (target within 300 MB).")


if __name__ == "__main__":
    main()
