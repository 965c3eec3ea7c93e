"""The task the tiny transformer is trained on: addition of two numbers of 1 to 3 digits.

A prompt is ``"a+b="`` with a, b in 0 .. 999 written without leading zeros; the answer is the
digits of a + b **least significant first**, then the end token: ``"123+459="`` is answered
``"285"`` (582 reversed) and ``END``. Writing the sum reversed lets the model produce each digit
after the digits it carries from, which small transformers learn far more easily.

Vocabulary (token ids): ``"0"`` .. ``"9"`` are 0 .. 9, ``"+"`` is 10, ``"="`` is 11, ``END``
is 12 (shown as ``"$"`` in strings). There is no pad token: training pads a batch with END and
masks the loss there (causal attention means a later token never changes an earlier one).

The split: a pair (a, b) is held out when a fixed 64-bit integer hash of a x 1000 + b (the
splitmix64 finalizer, :func:`pair_hash`) is 0 mod 10, so 10% of the 10^6 pairs, chosen
deterministically and never trained on. :func:`sample_pairs` draws pairs of one split with
the digit counts of a and b uniform over 1..3 each (uniform pairs would be 81% 3+3 digits).
"""

import numpy as np

__all__ = ["DIGITS", "PLUS", "EQUALS", "END", "VOCAB", "VOCAB_SIZE", "CONTEXT", "MAX_OPERAND",
           "MAX_ANSWER", "tokenize", "detokenize", "prompt", "parse_prompt", "answer", "check",
           "pair_hash", "is_heldout", "sample_pairs", "heldout_pairs", "check_tokens"]

PLUS, EQUALS, END = 10, 11, 12
VOCAB = tuple("0123456789") + ("+", "=", "$")       # "$" stands for END in strings
VOCAB_SIZE = len(VOCAB)
DIGITS = tuple(range(10))
CONTEXT = 64              # the model's positions: prompt plus generated tokens
MAX_OPERAND = 999
MAX_ANSWER = 5            # up to 4 digits (999 + 999 = 1998) and END
HELDOUT_MOD = 10          # one pair in HELDOUT_MOD is held out

_INDEX = {ch: i for i, ch in enumerate(VOCAB)}


def tokenize(text):
    """Token ids (a list of int) of a string over ``0123456789+=$`` ("$" is END)."""
    if not isinstance(text, str):
        raise ValueError(f"tokenize takes a string, not {type(text).__name__}")
    try:
        return [_INDEX[ch] for ch in text]
    except KeyError as e:
        raise ValueError(f"{e.args[0]!r} is not in the vocabulary {''.join(VOCAB)!r}") from None


def check_tokens(tokens, name="tokens"):
    """``tokens`` as a list of int, each checked to be a token id (ValueError naming it)."""
    out = []
    for t in np.asarray(tokens).reshape(-1).tolist() if not isinstance(tokens, list) else tokens:
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 0 <= t < VOCAB_SIZE:
            raise ValueError(f"{name}: {t!r} is not a token id (0 .. {VOCAB_SIZE - 1})")
        out.append(int(t))
    return out


def detokenize(tokens):
    """The string of token ids (END shown as "$")."""
    return "".join(VOCAB[t] for t in check_tokens(tokens))


def _check_operand(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v <= MAX_OPERAND:
        raise ValueError(f"{name} must be an integer in 0 .. {MAX_OPERAND}, not {v!r}")
    return int(v)


def prompt(a, b):
    """The prompt tokens of a + b: ``"a+b="``."""
    a, b = _check_operand("a", a), _check_operand("b", b)
    return tokenize(f"{a}+{b}=")


def answer(a, b):
    """The expected generated tokens: the digits of a + b least significant first, then END."""
    a, b = _check_operand("a", a), _check_operand("b", b)
    return tokenize(str(a + b)[::-1]) + [END]


def parse_prompt(p):
    """(a, b) of a prompt given as tokens or as a string ``"a+b="``; ValueError if malformed."""
    text = p if isinstance(p, str) else detokenize(p)
    body, eq, rest = text.partition("=")
    a, plus, b = body.partition("+")
    ok = (eq and not rest and plus and a.isdigit() and b.isdigit() and len(a) <= 3
          and len(b) <= 3 and (a == "0" or a[0] != "0") and (b == "0" or b[0] != "0"))
    if not ok:
        raise ValueError(f"{text!r} is not a prompt 'a+b=' with a, b of 1 to 3 digits")
    return int(a), int(b)


def check(prompt_, generated):
    """Whether ``generated`` (token ids) answers the prompt: its tokens up to and including the
    first END must be exactly :func:`answer` (anything after that END is ignored)."""
    expected = answer(*parse_prompt(prompt_))
    generated = check_tokens(generated, "generated")
    if END in generated:
        generated = generated[:generated.index(END) + 1]
    return generated == expected


# The split -------------------------------------------------------------------------------------

def pair_hash(a, b):
    """splitmix64's finalizer of a x 1000 + b (uint64, element-wise over arrays)."""
    with np.errstate(over="ignore"):
        z = np.asarray(a, dtype=np.uint64) * np.uint64(1000) + np.asarray(b, dtype=np.uint64)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def is_heldout(a, b):
    """Whether (a, b) is in the held-out split (element-wise)."""
    return pair_hash(a, b) % np.uint64(HELDOUT_MOD) == 0


def sample_pairs(rng, n, split="train"):
    """``n`` pairs (two int64 arrays a, b) of ``split`` ("train" or "heldout"), drawn with
    ``rng`` (a numpy Generator) with the digit counts of a and b uniform over 1..3. The pairs
    drawn for n are the first n of those drawn for any larger n from the same state."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
    want_heldout = split == "heldout"
    a_out, b_out, have = [], [], 0
    m = 4096              # fixed chunks: a smaller n draws a prefix of a larger one
    while have < n:
        la, lb = rng.integers(1, 4, size=m), rng.integers(1, 4, size=m)
        lo_a, lo_b = np.where(la == 1, 0, 10 ** (la - 1)), np.where(lb == 1, 0, 10 ** (lb - 1))
        a = lo_a + (rng.random(m) * (10 ** la - lo_a)).astype(np.int64)
        b = lo_b + (rng.random(m) * (10 ** lb - lo_b)).astype(np.int64)
        keep = is_heldout(a, b) == want_heldout
        a_out.append(a[keep]), b_out.append(b[keep])
        have += int(keep.sum())
    return np.concatenate(a_out)[:n], np.concatenate(b_out)[:n]


def heldout_pairs(n, seed=0):
    """A fixed sample of ``n`` held-out pairs (the evaluation and test sets)."""
    return sample_pairs(np.random.default_rng(seed), n, "heldout")
