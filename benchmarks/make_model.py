"""A randomly initialised BERT with all-MiniLM-L6-v2's shape and a WordPiece tokenizer trained on the data.

    python benchmarks/make_model.py DATA_DIR OUT_DIR [--hidden 384 --layers 6 --heads 12 --inter 1536 --vocab 30522]

For GPU machines that can receive no model weights (scripts/gpu_check.sh): right for speed and placement checks,
meaningless for quality. The embedding matrix has all-MiniLM-L6-v2's 30,522 rows whatever the trained tokenizer's
size, so the parameter count (and the optimizer's work) matches the real model. (From ../shared/gpu/make_model.py.)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def make_model(data: Path, out: Path, *, hidden: int = 384, layers: int = 6, heads: int = 12, inter: int = 1536, vocab: int = 30522) -> dict:
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    texts = []
    for name in ("train.jsonl", "val.jsonl", "corpus.jsonl"):
        if not (data / name).is_file():
            continue
        with open(data / name, encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                texts += [v for k, v in row.items() if k in ("query", "positive", "text") and isinstance(v, str)]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
        model_max_length=512,
    )
    torch.manual_seed(0)
    rows = max(vocab, tok.get_vocab_size())
    config = BertConfig(
        vocab_size=rows, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=inter,
        max_position_embeddings=512,
    )
    out.mkdir(parents=True, exist_ok=True)
    model = BertModel(config)
    model.save_pretrained(out)
    fast.save_pretrained(out)
    lengths = [len(ids) for ids in fast(texts[:5000])["input_ids"]]
    return {
        "model": str(out), "params": sum(p.numel() for p in model.parameters()), "tokenizer_vocab": tok.get_vocab_size(),
        "config_vocab": rows, "texts": len(texts), "mean_tokens_first5000": sum(lengths) / max(1, len(lengths)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--inter", type=int, default=1536)
    parser.add_argument("--vocab", type=int, default=30522)
    a = parser.parse_args(argv)
    print(json.dumps(make_model(a.data, a.out, hidden=a.hidden, layers=a.layers, heads=a.heads, inter=a.inter, vocab=a.vocab)))


if __name__ == "__main__":
    main()
