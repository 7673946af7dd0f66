"""A 1.9B-parameter Llama on meta with a padded attention mask (issue #17): python -m bench.meta_llama.

transformers' masking code checks ``padding_mask.all()`` in Python. Before #17 that made the whole backbone
(``LlamaModel``, 7 GB of float32 weights) fall back to real tensors, which the 1 GiB cap refuses: exit 2. Now
the check is answered from real twins of the mask and the model stays on meta. The model is built from a
config in code (nothing downloaded); prints a markdown table (recorded in docs/benchmarks.md).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SEQUENCE = 2048
CLI = [sys.executable, "-m", "modscope", "summary", "bench/meta_llama.py:llama_1b9", "--device", "meta", "--json"]
MASKED = [*CLI, "--inputs", "bench/meta_llama.py:padded_inputs"]
UNMASKED = [*CLI, "--input", f"2,{SEQUENCE}:int64[0,32000)"]


def llama_1b9():
    """LlamaForCausalLM, 1.88B parameters: 32 layers, d_model 2048, FFN 6144, 16 heads, vocab 32000."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=32000, hidden_size=2048, intermediate_size=6144, num_hidden_layers=32, num_attention_heads=16,
        num_key_value_heads=16, max_position_embeddings=4096, attn_implementation="sdpa",
    )
    return LlamaForCausalLM(config).eval()


def padded_inputs() -> dict:
    """Two sequences of 2048 tokens; the second is left-padded by 512 (its mask starts with zeros)."""
    ids = torch.randint(0, 32000, (2, SEQUENCE), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, SEQUENCE, dtype=torch.long)
    mask[1, :512] = 0
    return {"input_ids": ids, "attention_mask": mask}


def main(argv: list[str] | None = None) -> None:
    import modscope
    from bench.forward import _peak_rss

    torch.set_num_threads(1)
    with torch.device("meta"):
        model = llama_1b9()
    params = sum(p.numel() for p in model.parameters())
    inputs = padded_inputs()
    rows = []
    for label, given in (("with the padded mask", inputs), ("without a mask", {"input_ids": inputs["input_ids"]})):
        start = time.process_time()
        forward = modscope.summary(model, inputs=given, device="meta").forward
        spent = time.process_time() - start
        ran_real = [f.module for f in forward.fallbacks if "CPU" in f.action]
        rows.append(f"| modscope.summary, {label} | {spent:.2f} s | {len(forward.fallbacks)} note(s), on real tensors: "
                    f"{ran_real or 'nothing'} |")
    for label, cmd in (("with the padded mask", MASKED), ("without a mask", UNMASKED)):
        rss, wall = _peak_rss(cmd)
        rows.append(f"| `modscope summary ... --device meta` {label}: peak RSS | **{rss:.0f} MB**, {wall:.1f} s wall | |")
    print(f"Llama, {params / 1e9:.2f}B parameters, batch 2, sequence {SEQUENCE}, on meta (CPU time, 1 torch thread)\n")
    print("| what | cost | fallbacks |\n| --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
