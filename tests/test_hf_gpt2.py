#!/usr/bin/env python3
"""aiopt against Hugging Face transformers on a GPT-2 that transformers itself saved: a byte-level
BPE trained by the tokenizers library on a small text, a random GPT2LMHeadModel (3 layers, 96
channels, 4 heads) saved by save_pretrained. aiopt must encode the prompts as the tokenizers
library's byte-level BPE (what transformers' GPT-2 tokenizer runs) does, give the same logits on the same tokens, and the same 40 greedy tokens as generate().

  tests/test_hf_gpt2.py AIOPT

Runs under the Python named by AIOPT_HF_PYTHON, else this one; where that Python lacks torch or
transformers, it prints why and exits 77 (skipped).

Tolerances: both sides compute in fp32 and differ in the order of sums (OpenBLAS against
PyTorch's kernels): logits within 1e-4 of the largest |logit| of their position. A greedy token
may differ only where transformers' own top two logits lie within that tolerance (a near tie).
"""
import json
import os
import pathlib
import subprocess
import sys
import tempfile

from script_checks import check, run, verdict

aiopt = sys.argv[1]

python = os.environ.get("AIOPT_HF_PYTHON")
if python:
    # Under the Python that has transformers (a venv's python is a link to the system's, so it is
    # run by name, not compared); script_checks comes along through PYTHONPATH.
    env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).parent), AIOPT_HF_PYTHON="")
    sys.exit(subprocess.run([python, __file__, *sys.argv[1:]], env=env).returncode)

try:
    import torch
    import transformers
    from tokenizers import ByteLevelBPETokenizer
except ImportError as e:
    print(f"skipped: {sys.executable} cannot import torch, transformers and tokenizers ({e}); "
          "set AIOPT_HF_PYTHON to a Python that has them")
    sys.exit(77)

TOLERANCE = 1e-4
CORPUS = """The quick brown fox jumps over the lazy dog. It's 12:30 and we'll see what they've done!
Les élèves étudient à l'école; naïve café crème. 日本語のテキストも少し。 Ελληνικά γράμματα.
def main(argv):\n    return sum(int(x) for x in argv)  # 42 + 7 == 49\n\n\n
Emoji 🙂🚀 and tabs\tand   many    spaces.   Numbers 3.14159 2718281828 and $100,000.00.
""" * 20

PROMPTS = ["Hello world", "The quick brown fox", "  two leading spaces and 123 digits",
           "I'm sure they'll've said it's fine", "école 日本語 🙂", "def f(x):\n    return x\n\n",
           "<|endoftext|>after the special token"]

with tempfile.TemporaryDirectory() as tmp:
    folder = pathlib.Path(tmp) / "gpt2-small-test"
    folder.mkdir()
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([CORPUS], vocab_size=400, min_frequency=2, special_tokens=["<|endoftext|>"])
    bpe.save_model(str(folder))  # vocab.json, merges.txt
    # Reloaded from the files aiopt reads, so both sides tokenize from the same vocab and merges.
    tokenizer = ByteLevelBPETokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    tokenizer.add_special_tokens(["<|endoftext|>"])
    vocab = tokenizer.get_vocab_size()

    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=3, n_embd=96, n_head=4, n_positions=128, vocab_size=vocab,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    print(f"saved a random GPT-2 (L3 d96 h4, vocabulary {vocab}) with transformers {transformers.__version__}, "
          f"torch {torch.__version__}")

    def aiopt_generate(prompt, tokens):
        out = pathlib.Path(tmp) / "logits.json"
        run([aiopt, "generate", "--checkpoint", str(folder), "--prompt", prompt, "--tokens", str(tokens),
             "--logits", str(out), "--threads", "1"])
        return json.loads(out.read_text())

    # The tokenizer: the prompt's ids are transformers'.
    for prompt in PROMPTS:
        got = aiopt_generate(prompt, 1)
        want = tokenizer.encode(prompt).ids
        check(got["tokens"][:len(want)] == want and len(got["tokens"]) == len(want) + 1,
              f"{prompt!r} encodes to {got['tokens'][:-1]}, transformers gives {want}")

    # The model: logits on the same tokens, and greedy generation.
    for prompt in PROMPTS[:3]:
        got = aiopt_generate(prompt, 40)
        prompt_ids = tokenizer.encode(prompt).ids
        with torch.no_grad():
            want_ids = model.generate(torch.tensor([prompt_ids]), max_new_tokens=40, do_sample=False,
                                      pad_token_id=0)[0].tolist()
            logits = model(torch.tensor([got["tokens"]])).logits[0]
        worst = 0.0
        for pos, row in enumerate(got["logits"]):
            ref = logits[pos]
            err = (torch.tensor(row) - ref).abs().max().item() / ref.abs().max().item()
            worst = max(worst, err)
        check(worst <= TOLERANCE, f"{prompt!r}: logits differ by {worst:.2e} of the largest (tolerance {TOLERANCE})")
        # Greedy: each new token is transformers' argmax on the same prefix, but for a near tie.
        for t in range(len(prompt_ids), len(got["tokens"])):
            ref = logits[t - 1]
            top2 = torch.topk(ref, 2).values
            near_tie = (top2[0] - top2[1]).item() <= TOLERANCE * ref.abs().max().item()
            check(got["tokens"][t] == int(ref.argmax()) or near_tie,
                  f"{prompt!r}: token {t} is {got['tokens'][t]}, transformers' argmax {int(ref.argmax())}")
        same = got["tokens"] == want_ids
        print(f"{prompt!r}: 40 greedy tokens {'identical to' if same else 'differ from'} transformers' generate(); "
              f"logits within {worst:.1e} of the largest")

sys.exit(verdict())
