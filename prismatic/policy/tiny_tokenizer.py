"""An offline tokenizer in the Llama-2 conventions, for the tiny preset.

The 7B models use their checkpoint's Llama-2 tokenizer. The tiny preset cannot download one, so this builds a small
SentencePiece BPE model from text embedded here, deterministically, with the same conventions: ``<unk>`` 0, ``<s>`` 1
(added as BOS), ``</s>`` 2, byte fallback (``\\n`` -> ``<0x0A>``), a "▁" piece, and the last ``n_action_bins`` ids held
by rare characters that ordinary text never produces (Llama-2's last ids are rare CJK characters), so action token
ids ``vocab_size - bin`` never collide with prompt tokens. ``<PAD>`` is appended after the vocabulary.
"""

from __future__ import annotations

import copy
import functools
import io
import json
import tempfile
from pathlib import Path

from prismatic.vla.constants import PROMPT_TEMPLATE

TINY_VOCAB_SIZE = 960  # + <PAD> = 961 -> the model's vocabulary is padded to 1024 (pad_to_multiple_of 64)
N_ACTION_BINS = 256

# Words of robot-manipulation instructions (LIBERO's task language and common variants) and the prompt template.
_CORPUS_WORDS = ["in", "what", "action", "should", "the", "robot", "take", "to", "out", "pick", "up", "place", "put", "it", "on", "into", "inside", "onto", "and", "the", "a", "an", "of", "at", "open", "close", "top", "middle", "bottom", "drawer", "cabinet", "door", "microwave", "stove", "turn", "on", "off", "push", "pull", "slide", "move", "black", "white", "red", "yellow", "blue", "green", "brown", "wooden", "plate", "bowl", "basket", "tray", "rack", "caddy", "mug", "cup", "book", "shelf", "alphabet", "soup", "cream", "cheese", "tomato", "sauce", "ketchup", "orange", "juice", "milk", "chocolate", "pudding", "butter", "salad", "dressing", "bbq", "barbecue", "box", "can", "bottle", "wine", "left", "right", "front", "back", "behind", "next", "between", "near", "far", "table", "counter", "ramekin", "cookie", "cookies", "frying", "pan", "moka", "pot", "pots", "cabinet", "flat", "shelf", "compartment", "both", "stack", "them"]


def _corpus() -> list[str]:
    words = _CORPUS_WORDS
    sentences = [PROMPT_TEMPLATE.format(" ".join(words[i : i + 9])) for i in range(0, len(words), 3)]
    sentences += [" ".join(words[i::7]) for i in range(7)]
    sentences += ["0123456789 .,:;?!'\"()-_/ ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz"]
    return sentences * 4


@functools.lru_cache(maxsize=4)
def build_sentencepiece_model(vocab_size: int = TINY_VOCAB_SIZE, n_action_bins: int = N_ACTION_BINS) -> bytes:
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    trained = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()),
        model_writer=trained,
        vocab_size=vocab_size - n_action_bins,
        model_type="bpe",
        byte_fallback=True,
        split_digits=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    model = pb.ModelProto()
    model.ParseFromString(trained.getvalue())
    pieces = {p.piece for p in model.pieces}
    if "▁" not in pieces:
        raise RuntimeError("the tiny SentencePiece model lacks the '▁' piece")

    def add_rare(char: str) -> None:
        piece = model.pieces.add()
        piece.piece, piece.score, piece.type = char, -1e6, pb.ModelProto.SentencePiece.NORMAL

    # Fill up to the action block (the trainer may stop early on a small corpus), then the action block itself.
    code = 0x3400  # CJK Extension A: never produced by English text
    while len(model.pieces) < vocab_size:
        add_rare(chr(code))
        code += 1
    return model.SerializeToString()


def tiny_empty_token_id(vocab_size: int = TINY_VOCAB_SIZE) -> int:
    """Id of "▁" (Llama-2's 29871): the token between "Out:" and the first action token."""
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_proto=build_sentencepiece_model(vocab_size)).piece_to_id("▁")


def build_tiny_tokenizer(vocab_size: int = TINY_VOCAB_SIZE):
    """A transformers ``LlamaTokenizer`` with ``<PAD>`` appended (id ``vocab_size``), right padding."""
    return copy.deepcopy(_build_tiny_tokenizer(vocab_size))


@functools.lru_cache(maxsize=2)
def _build_tiny_tokenizer(vocab_size: int):
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "tokenizer.model").write_bytes(build_sentencepiece_model(vocab_size))
        Path(folder, "tokenizer_config.json").write_text(
            json.dumps(
                {
                    "tokenizer_class": "LlamaTokenizer",
                    "add_bos_token": True,
                    "add_eos_token": False,
                    "legacy": False,
                    "padding_side": "right",
                    "model_max_length": 2048,
                }
            )
        )
        tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.add_special_tokens({"pad_token": "<PAD>"})
    if tokenizer.pad_token_id != vocab_size or tokenizer.vocab_size != vocab_size:
        raise RuntimeError(f"tiny tokenizer layout is off: vocab {tokenizer.vocab_size}, pad {tokenizer.pad_token_id}")
    return tokenizer
