#!/usr/bin/env python3
"""Generates wordpiece_vectors.json, the expected tokenizations that
tests/unit/wordpiece_test.cpp checks aise::ml::wordpiece_tokenizer against.

The oracle is BERT's reference tokenizer itself (tokenization.py of
github.com/google-research/bert), run unchanged; only its TensorFlow import
is stubbed (it uses tf.gfile to read the vocabulary). Run with a checkout of
that repository:

    python3 tests/unit/data/gen_wordpiece_vectors.py <bert-checkout> \
        > tests/unit/data/wordpiece_vectors.json
"""
import json
import os
import sys
import tempfile
import types

VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "!", "\"", "#", "$", "%", "&", "'", "(", ")", "*", "+", ",", "-", ".", "/", ":", ";", "<",
    "=", ">", "?", "@", "[", "\\", "]", "^", "_", "`", "{", "|", "}", "~", "¡", "¿", "«", "»",
    "—", "“", "”", "…", "、", "。", "「", "」",
    "the", "a", "an", "and", "is", "of", "to", "in", "it", "on", "for", "with", "hello", "how",
    "are", "you", "john", "johan", "##son", "s", "house", "un", "##aff", "##able", "##want",
    "##ed", "runn", "##ing", "want", "run", "##s", "##er", "##ly", "agent", "##s", "task",
    "tasks", "code", "review", "fix", "bug", "test", "build", "deploy", "merge", "request",
    "cafe", "naive", "resume", "uber", "strasse", "ecole", "garcon", "pinata", "facade",
    "σας", "σ", "ς", "σα", "##ας", "##σ", "αλλα", "οδος", "ο", "##ς", "##σ", "ι", "i", "istanbul", "ı", "##i",
    "привет", "мир", "и", "й", "##й", "ёж", "еж",
    "中", "国", "博", "推", "日", "本", "语", "한", "국", "ᄒ", "##ᅡ", "##ᆫ", "ᄀ", "##ᅮ", "##ᆨ",
    "ah", "zz", "##zz", "x", "##x", "y", "z", "1", "2", "3", "##1", "##2", "##3", "12", "##0",
    "100", "%", "π", "fi", "##fi", "ﬁ", "ǆ", "dz", "##z", "ß", "ss", "ǅ", "ǉ", "lj",
    "emoji", "😀", "##😀", "🤖", "ok", "##ok", "ab", "##cd", "abc", "##d",
    "ﾊ", "ﾝ", "ｶｸ", "ｶ", "##ｸ", "ａｂｃ", "ａ", "##ｂ", "##ｃ", "é", "e", "##e", "o", "##o",
    "أ", "ا", "##ل", "مرحبا", "שלום", "नमस्ते", "नमसत", "##े",
]
# Duplicates in the list above would make load_vocab keep the last id;
# keep the first, as libaise rejects duplicates.
seen, vocab = set(), []
for t in VOCAB:
    if t not in seen:
        seen.add(t)
        vocab.append(t)

TEXTS = [
    "", " ", "\t\n\r", "hello", "Hello", "HELLO!", " \tHeLLo!how  \n Are yoU?  ",
    "UNwant\u00E9d,running", "unaffable", "John Johanson's house",
    "ah\u535A\u63A8zz", "中国日本语", "H\u00E9llo", "Caf\u00E9 na\u00EFve r\u00E9sum\u00E9 \u00FCber",
    "Stra\u00DFe \u00C9cole gar\u00E7on pi\u00F1ata fa\u00E7ade",
    "ΣΑΣ", "ΟΔΟΣ", "ΑΛΛΑ", "Σ", "ΣΣ", "ΑΣ.", "ΑΣ'Α", "ΟΔΟΣ's", "ΑΣ\u0301", "\u03A3\u0391",
    "\u0130stanbul", "ISTANBUL", "\u0131", "I\u0307",
    "Привет, мир!", "ЁЖ и й", "Й", "\u0419\u0306",
    "한국", "가", "\u1100\u1161", "각",
    "emoji 😀🤖", "ok😀ok", "\U0001F600", "\u200B", "a\u200Bb", "a\u00ADb", "a\u0000b", "a\uFFFDb",
    "x\u0301y", "\u0301", "e\u0301", "\u00E9", "\u1E9E", "\uFB01", "\u01C4 \u01C5 \u01C6 \u01C9",
    "\uFF8A\uFF9D\uFF76\uFF78", "\uFF21\uFF22\uFF23", "ａｂｃ",
    "100% 12.3 $1,000", "^_^ `x` ~z~", "a--b", "¿Qué? ¡Sí!", "«quoted» “curly” …",
    "「日本」、。", "مرحبا أهلا", "שָׁלוֹם", "नमस्ते", "\u2028line\u2029para\u0085next",
    "tab\there\u000Bvt\u000Cff", "a\u00A0b\u3000c\u2003d", "\u202Eevil\u202C", "\uFEFFbom",
    "x" * 101, "abcd" * 30, "abcd", "abcdd", "ab##cd", "[CLS] [SEP] [UNK]",
    "review the code and fix the bug", "Deploy, build & test: merge-request #12",
    "The agent's tasks are tests of code-review.", "\U0002A6D6\U0002F800",
    "Ǆ ǅ ǆ", "Ǉǈǉ", "ΐ ΰ", "ﬃ", "Åström", "Ærøskøbing", "Ωmega ℃ ℉ K Å",
]


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    checkout = sys.argv[1]
    tf = types.ModuleType("tensorflow")
    tf.gfile = types.SimpleNamespace(GFile=lambda path, mode: open(path, mode, encoding="utf-8"))
    sys.modules["tensorflow"] = tf
    sys.path.insert(0, checkout)
    import tokenization  # noqa: E402  (the reference, unchanged)

    # Two vocabularies: the hand-made one (word pieces, many unknown words)
    # and one that also holds every word the basic tokenizer makes of the
    # texts (so the cases show its splitting, not [UNK]).
    words = list(vocab)
    known = set(words)
    for lower in (True, False):
        basic = tokenization.BasicTokenizer(do_lower_case=lower)
        for text in TEXTS:
            for w in basic.tokenize(text):
                if w not in known and len(w) <= 100:
                    known.add(w)
                    words.append(w)
    cases = []
    for name, v in (("pieces", vocab), ("words", words)):
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False,
                                         encoding="utf-8") as f:
            f.write("\n".join(v) + "\n")
            vocab_path = f.name
        try:
            for lower in (True, False):
                tok = tokenization.FullTokenizer(vocab_path, do_lower_case=lower)
                for text in TEXTS:
                    tokens = tok.tokenize(text)
                    cases.append({"vocab": name, "text": text, "lower_case": lower,
                                  "tokens": tokens, "ids": tok.convert_tokens_to_ids(tokens)})
        finally:
            os.unlink(vocab_path)
    json.dump({"source": "google-research/bert tokenization.py (FullTokenizer)",
               "vocabularies": {"pieces": vocab, "words": words}, "cases": cases}, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
