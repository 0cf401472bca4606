"""Tokenizers for the policy models: HF `tokenizer.json` dirs, GGUF metadata, Qwen2 tiktoken ranks.

Every source becomes one frozen `Tokenizer` around a `tokenizers.Tokenizer` backend plus the
ids the rollout needs (BOS, EOS, padding, the end-of-turn stop ids) and the chat template,
rendered by transformers' own chat-template renderer. `Tokenizer.save_hf` writes any of them as
an HF tokenizer directory (what `python -m medr3_jax.export` ships beside the weights).

    tok = load_tokenizer("/path/SmolLM2-135M-Instruct.Q4_1.gguf")   # or an HF directory
    prompt = tok.apply_chat_template([{"role": "user", "content": "Q?"}])
    ids = tok.encode(prompt)
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import importlib.resources
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers

# Tokens that end a turn in the chat formats we serve; each one present becomes a stop id.
END_OF_TURN_TOKENS: tuple[str, ...] = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|endoftext|>", "<|end_of_text|>")

# Pre-tokenizer split patterns, as in the models' own tokenizer.json files (and llama.cpp).
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# `tokenizer.ggml.pre` -> how the text is split before BPE (llama.cpp's `llama-vocab.cpp` groups).
_GPT2_PRES = ("default", "gpt2", "gpt-2", "mpt", "olmo", "jais")
_DIGIT_PRES = ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b")
_LLAMA3_PRES = ("llama3", "llama-v3", "llama-bpe", "falcon3", "smaug-bpe", "dbrx", "pixtral")
_QWEN2_PRES = ("qwen2", "deepseek-r1-qwen", "megrez")

# Qwen2.5-Instruct's official chat template, shipped verbatim as package data (see `qwen2_5_chat_template`).
QWEN2_5_CHAT_TEMPLATE_FILE = "chat_templates/qwen2_5.jinja"
# Qwen2.5's added tokens from id 151643 on: (text, special). The FIM/tool ones are not special.
_QWEN2_ADDED: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Tokenizer:
    """A `tokenizers.Tokenizer` plus the special ids and chat template a rollout needs.

    tok = load_tokenizer(path)
    ids = tok.encode("<think>", add_bos=tok.bos_id is not None)
    text = tok.decode(ids)
    """

    backend: tokenizers.Tokenizer
    eos_id: int
    pad_id: int
    bos_id: int | None = None
    unk_id: int | None = None
    stop_ids: tuple[int, ...] = ()  # eos first, then other end-of-turn ids; () means (eos_id,)
    chat_template: str | None = None
    path: str = ""  # where it was loaded from, for messages

    def __post_init__(self) -> None:
        size = self.vocab_size
        for name in ("eos_id", "pad_id", "bos_id", "unk_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < size:
                raise ValueError(f"{self.path}: {name}={value} is outside the vocabulary (size {size})")
        if not self.stop_ids:
            object.__setattr__(self, "stop_ids", (self.eos_id,))
        if self.stop_ids[0] != self.eos_id:
            raise ValueError(f"{self.path}: stop_ids={self.stop_ids} must start with eos_id={self.eos_id}")

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included (may be below the model's embedding rows)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
        """Token ids of `text`; special tokens written in the text become their ids."""
        ids = self.backend.encode(text, add_special_tokens=False).ids
        if add_bos:
            if self.bos_id is None:
                raise ValueError(f"{self.path}: add_bos=True but this tokenizer has no BOS token")
            ids = [self.bos_id, *ids]
        return ids

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def token_bytes(self) -> list[bytes]:
        """The UTF-8 bytes each id stands for, indexed by id (for token-level stop matching).

        Byte-level BPE tokens are spelled in GPT-2's byte alphabet and map back exactly; added
        tokens are their content; anything else falls back to decoding the id alone.
        """
        inverse = {ch: b for b, ch in enumerate(_byte_alphabet())}
        added = {i: t.content for i, t in self.backend.get_added_tokens_decoder().items()}
        out: list[bytes] = []
        for token_id in range(self.vocab_size):
            if token_id in added:
                out.append(added[token_id].encode("utf-8"))
                continue
            piece = self.backend.id_to_token(token_id) or ""
            if piece and all(ch in inverse for ch in piece):
                out.append(bytes(inverse[ch] for ch in piece))
            else:
                out.append(self.backend.decode([token_id], skip_special_tokens=False).encode("utf-8"))
        return out

    def id_to_token(self, token_id: int) -> str | None:
        return self.backend.id_to_token(int(token_id))

    def apply_chat_template(
        self, messages: list[dict[str, Any]], *, add_generation_prompt: bool = True, **kwargs: Any
    ) -> str:
        """Renders `messages` with the chat template by transformers' own renderer, with the
        variables its `apply_chat_template` passes (`bos_token`, `eos_token`, `pad_token`,
        `unk_token`; keys whose value is None dropped from each message); `kwargs` (e.g. `tools`)
        reach the template too. transformers is imported on the first call (about 0.5 s, no torch)."""
        if self.chat_template is None:
            raise ValueError(f"{self.path}: this tokenizer has no chat template")
        render_jinja_template = _transformers_renderer()
        chat = [{k: v for k, v in m.items() if v is not None} for m in messages]
        rendered, _ = render_jinja_template(
            conversations=[chat],
            chat_template=self.chat_template,
            add_generation_prompt=add_generation_prompt,
            **(self.special_tokens() | kwargs),
        )
        return rendered[0]

    def special_tokens(self) -> dict[str, str]:
        """{"bos_token": text, "eos_token": ..., "pad_token": ..., "unk_token": ...} for the ids set."""
        names = {"bos_token": self.bos_id, "eos_token": self.eos_id, "pad_token": self.pad_id, "unk_token": self.unk_id}
        return {k: self.id_to_token(v) for k, v in names.items() if v is not None}

    def save_hf(self, out_dir: str | os.PathLike[str], *, model_max_length: int | None = None) -> list[str]:
        """Writes an HF tokenizer directory: tokenizer.json (this backend), tokenizer_config.json
        (special tokens, added_tokens_decoder, chat template) and special_tokens_map.json, so
        `transformers.AutoTokenizer.from_pretrained(out_dir)` encodes, decodes and renders chats as
        this Tokenizer does. Returns the names written.

        tokenizer_class is PreTrainedTokenizerFast (transformers 4 and 5 both load tokenizer.json
        as is through it; a model-specific class may rebuild the pre-tokenizer its own way).
        """
        out = os.fspath(out_dir)
        os.makedirs(out, exist_ok=True)
        self.backend.save(os.path.join(out, "tokenizer.json"))
        added = {
            str(i): {
                "content": t.content,
                "lstrip": t.lstrip,
                "normalized": t.normalized,
                "rstrip": t.rstrip,
                "single_word": t.single_word,
                "special": t.special,
            }
            for i, t in sorted(self.backend.get_added_tokens_decoder().items())
        }
        special = self.special_tokens()
        config: dict[str, Any] = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "added_tokens_decoder": added,
            **{name: special.get(name) for name in ("bos_token", "eos_token", "pad_token", "unk_token")},
            "clean_up_tokenization_spaces": False,  # decode exactly as the backend does
        }
        if model_max_length is not None:
            config["model_max_length"] = int(model_max_length)
        if self.chat_template is not None:
            config["chat_template"] = self.chat_template
        for name, data in (("tokenizer_config.json", config), ("special_tokens_map.json", special)):
            with open(os.path.join(out, name), "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=2, ensure_ascii=False)
                fh.write("\n")
        return ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


def generation_config(tokenizer: Tokenizer, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """generation_config.json: `base` (the source's, if any) with our bos / pad ids and every
    stop id (eos first) as eos_token_id, so generate stops where our sampler stops."""
    out = dict(base or {})
    stops = [int(i) for i in tokenizer.stop_ids]
    out["eos_token_id"] = stops if len(stops) > 1 else stops[0]
    out["pad_token_id"] = int(tokenizer.pad_id)
    if tokenizer.bos_id is not None:
        out["bos_token_id"] = int(tokenizer.bos_id)
    else:
        out.pop("bos_token_id", None)
    return out


def _transformers_renderer():
    """transformers' chat-template renderer, imported on first use (about 0.5 s). Its import
    advises, on stderr, that PyTorch was not found when torch is not installed (the demo install):
    we need no torch models, so that advisory warning is silenced for the import alone."""
    was = os.environ.get("TRANSFORMERS_NO_ADVISORY_WARNINGS")
    os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"
    try:
        from transformers.utils.chat_template_utils import render_jinja_template  # noqa: PLC0415
    finally:
        if was is None:
            os.environ.pop("TRANSFORMERS_NO_ADVISORY_WARNINGS")
        else:
            os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = was
    return render_jinja_template


def _stop_ids(backend: tokenizers.Tokenizer, eos_id: int, extra: Sequence[int] = ()) -> tuple[int, ...]:
    """eos first, then `extra` ids, then every end-of-turn token the vocabulary has; no repeats."""
    named = [backend.token_to_id(t) for t in END_OF_TURN_TOKENS]
    out: list[int] = []
    for i in (eos_id, *extra, *named):
        if i is not None and int(i) not in out:
            out.append(int(i))
    return tuple(out)


# ---- loading ------------------------------------------------------------------------------
def load_tokenizer(path: str) -> Tokenizer:
    """Loads an HF tokenizer directory (`tokenizer.json` + configs), a `.gguf` file's tokenizer or
    Qwen2 tiktoken ranks (`*.tiktoken`): every path a `Tokenizer.path` records loads back."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return _from_hf_dir(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such tokenizer directory, .gguf or .tiktoken file")
    if os.path.basename(path) == "tokenizer.json":
        return _from_hf_dir(os.path.dirname(path) or ".")
    if path.endswith(".tiktoken"):
        return qwen2_tokenizer_from_tiktoken(path)
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic == b"GGUF" or path.endswith(".gguf"):
        return _from_gguf(path)
    raise ValueError(f"{path}: neither a directory with tokenizer.json, a GGUF file nor a .tiktoken ranks file")


def _read_json(path: str) -> dict[str, Any]:
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as fh:
        try:
            return json.load(fh)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config spells it: a string or an AddedToken dict."""
    if isinstance(value, Mapping):
        return value.get("content")
    return value if isinstance(value, str) else None


def _id_list(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def _first(*values: Any) -> Any:
    """The first value that is not None (0 is a valid token id)."""
    return next((v for v in values if v is not None), None)


def _hf_chat_template(folder: str, config: Mapping[str, Any]) -> str | None:
    """`chat_template.jinja` beats `tokenizer_config.json`'s field (a string or named list)."""
    jinja = os.path.join(folder, "chat_template.jinja")
    if os.path.exists(jinja):
        with open(jinja, encoding="utf-8") as fh:
            return fh.read()
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template}
        return named.get("default") or next(iter(named.values()), None)
    return template


def _from_hf_dir(folder: str) -> Tokenizer:
    """tokenizer.json for the backend; tokenizer_config / special_tokens_map / config /
    generation_config for the special ids (the tokenizer's own names win over model configs)."""
    file = os.path.join(folder, "tokenizer.json")
    if not os.path.exists(file):
        raise FileNotFoundError(f"{file}: no such file (an HF tokenizer directory needs tokenizer.json)")
    backend = tokenizers.Tokenizer.from_file(file)
    tok_config = _read_json(os.path.join(folder, "tokenizer_config.json"))
    names = _read_json(os.path.join(folder, "special_tokens_map.json")) | tok_config
    model_config = _read_json(os.path.join(folder, "config.json"))
    gen_config = _read_json(os.path.join(folder, "generation_config.json"))

    def special(name: str) -> int | None:
        text = _token_text(names.get(name))
        if text is None:
            return None
        token_id = backend.token_to_id(text)
        if token_id is None:
            raise ValueError(f"{folder}: {name}={text!r} is not in the vocabulary of {file}")
        return token_id

    config_eos = _id_list(gen_config.get("eos_token_id")) + _id_list(model_config.get("eos_token_id"))
    eos = _first(special("eos_token"), *config_eos)
    if eos is None:
        raise ValueError(f"{folder}: no eos_token in tokenizer_config.json and no eos_token_id in the model configs")
    bos = _first(special("bos_token"), gen_config.get("bos_token_id"), model_config.get("bos_token_id"))
    pad = _first(special("pad_token"), model_config.get("pad_token_id"), gen_config.get("pad_token_id"), eos)
    return Tokenizer(
        backend=backend,
        eos_id=int(eos),
        pad_id=int(pad),
        bos_id=None if bos is None else int(bos),
        unk_id=special("unk_token"),
        stop_ids=_stop_ids(backend, int(eos), config_eos),
        chat_template=_hf_chat_template(folder, tok_config),
        path=folder,
    )


# ---- byte-level BPE construction -------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _byte_alphabet() -> tuple[str, ...]:
    """GPT-2's byte -> printable character table: byte-level vocabularies spell tokens in it."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return tuple(table[b] for b in range(256))


def _byte_spelling(raw: bytes) -> str:
    alphabet = _byte_alphabet()
    return "".join(alphabet[b] for b in raw)


def _pre_tokenizer(pre: str, source: str) -> tuple[Any, Any]:
    """(normalizer, pre-tokenizer) for a llama.cpp `tokenizer.ggml.pre` name."""
    if pre in _GPT2_PRES:
        return None, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in _DIGIT_PRES:
        # As SmolLM2's own tokenizer.json (and llama.cpp): every digit is its own piece first.
        digits = pre_tokenizers.Digits(individual_digits=True)
        return None, pre_tokenizers.Sequence([digits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    if pre in _LLAMA3_PRES or pre in _QWEN2_PRES:
        split = pre_tokenizers.Split(Regex(_LLAMA3_SPLIT if pre in _LLAMA3_PRES else _QWEN2_SPLIT), behavior="isolated")
        norm = normalizers.NFC() if pre in _QWEN2_PRES else None
        return norm, pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    known = sorted({*_GPT2_PRES, *_DIGIT_PRES, *_LLAMA3_PRES, *_QWEN2_PRES})
    raise ValueError(f"{source}: tokenizer.ggml.pre={pre!r} is not supported (supported: {known})")


def _byte_level_backend(
    vocab: dict[str, int], merges: list[tuple[str, str]], pre: str, source: str, *, ignore_merges: bool = False
) -> tokenizers.Tokenizer:
    """A byte-level BPE backend (GPT-2 / LLaMA-3 / Qwen2 family) with ByteLevel decoding."""
    model = tokenizers.models.BPE(
        vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False, ignore_merges=ignore_merges
    )
    backend = tokenizers.Tokenizer(model)
    normalizer, pre_tokenizer = _pre_tokenizer(pre, source)
    if normalizer is not None:
        backend.normalizer = normalizer
    backend.pre_tokenizer = pre_tokenizer
    backend.decoder = decoders.ByteLevel()
    return backend


def _add_tokens(backend: tokenizers.Tokenizer, tokens: Sequence[tuple[str, bool, int]], source: str) -> None:
    """Adds (text, special, id) tokens, matched whole in the text; each must land on its id."""
    for text, is_special, want in tokens:
        token = AddedToken(text, special=is_special, normalized=False)
        if is_special:
            backend.add_special_tokens([token])
        else:
            backend.add_tokens([token])
        if backend.token_to_id(text) != want:
            raise ValueError(f"{source}: added token {text!r} got id {backend.token_to_id(text)}, expected {want}")


# ---- GGUF ----------------------------------------------------------------------------------
def _from_gguf(path: str) -> Tokenizer:
    """The byte-level BPE tokenizer a GGUF file describes in `tokenizer.ggml.*` metadata."""
    from medr3_jax.models.gguf import open_reader, read_field  # noqa: PLC0415 - gguf is optional

    reader = open_reader(path)

    def need(key: str) -> Any:
        value = read_field(reader, key)
        if value is None:
            raise ValueError(f"{path}: missing metadata field {key!r}")
        return value

    kind = need("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ValueError(f"{path}: tokenizer.ggml.model={kind!r} is not supported (only byte-level BPE 'gpt2')")
    tokens: list[str] = need("tokenizer.ggml.tokens")
    types: list[int] = read_field(reader, "tokenizer.ggml.token_type") or [1] * len(tokens)
    vocab = _gguf_vocab(tokens, types, path)
    merges = [tuple(m.split(" ", 1)) for m in need("tokenizer.ggml.merges")]
    pre = read_field(reader, "tokenizer.ggml.pre", "default")
    backend = _byte_level_backend(vocab, merges, pre, path, ignore_merges=pre in _LLAMA3_PRES)
    # llama.cpp token types: 3 = control (special), 4 = user-defined (matched whole, not special).
    added = [(t, ty == 3, i) for i, (t, ty) in enumerate(zip(tokens, types)) if ty in (3, 4)]
    _add_tokens(backend, added, path)
    eos = int(need("tokenizer.ggml.eos_token_id"))
    bos, pad, unk = (
        read_field(reader, f"tokenizer.ggml.{k}") for k in ("bos_token_id", "padding_token_id", "unknown_token_id")
    )
    extra = [
        int(e)
        for e in (read_field(reader, "tokenizer.ggml.eot_token_id"), read_field(reader, "tokenizer.ggml.eom_token_id"))
        if e is not None
    ]
    return Tokenizer(
        backend=backend,
        eos_id=eos,
        pad_id=eos if pad is None else int(pad),
        bos_id=None if bos is None else int(bos),
        unk_id=None if unk is None else int(unk),
        stop_ids=_stop_ids(backend, eos, extra),
        chat_template=read_field(reader, "tokenizer.chat_template"),
        path=path,
    )


def _gguf_vocab(tokens: Sequence[str], types: Sequence[int], source: str) -> dict[str, int]:
    """token -> id. Byte-level tokens are already spelled in GPT-2's byte alphabet; a plain one
    that is not (a raw-text user token) is re-spelled; control/user tokens keep their text."""
    alphabet = set(_byte_alphabet())
    vocab: dict[str, int] = {}
    for i, (token, kind) in enumerate(zip(tokens, types)):
        if kind not in (3, 4) and not set(token) <= alphabet:
            token = _byte_spelling(token.encode("utf-8"))
        if token in vocab:
            raise ValueError(
                f"{source}: token {token!r} appears twice in tokenizer.ggml.tokens (ids {vocab[token]} and {i})"
            )
        vocab[token] = i
    return vocab


# ---- Qwen2 from tiktoken ranks ---------------------------------------------------------------
def qwen2_tokenizer_from_tiktoken(path: str) -> Tokenizer:
    """Qwen2 / Qwen2.5 byte-level BPE built from a tiktoken ranks file (`base64 rank` lines).

    Ranks become vocab ids; merges are every split of a token into two tokens of lower rank,
    ordered by the merged token's rank (tiktoken merges the lowest-rank pair first, so BPE with
    these merges tokenises as tiktoken does). Special tokens follow from id 151643.
    """
    ranks = _read_tiktoken_ranks(path)
    vocab = {_byte_spelling(raw): rank for raw, rank in ranks.items()}
    backend = _byte_level_backend(vocab, _merges_from_ranks(ranks), "qwen2", path)
    _add_tokens(backend, [(text, special, len(ranks) + i) for i, (text, special) in enumerate(_QWEN2_ADDED)], path)
    eos, pad = backend.token_to_id("<|im_end|>"), backend.token_to_id("<|endoftext|>")
    return Tokenizer(
        backend=backend,
        eos_id=eos,
        pad_id=pad,
        bos_id=None,
        stop_ids=_stop_ids(backend, eos),
        chat_template=qwen2_5_chat_template(),
        path=path,
    )


@functools.lru_cache(maxsize=1)
def qwen2_5_chat_template() -> str:
    """Qwen2.5-Instruct's official chat template: the `chat_template` field of the
    tokenizer_config.json Qwen ships with its Qwen2.5 Instruct models (e.g. Qwen/Qwen2.5-3B-Instruct,
    modelscope.cn/models/Qwen/Qwen2.5-3B-Instruct/file/view/master?fileName=tokenizer_config.json,
    the same text on huggingface.co), kept verbatim in `chat_templates/qwen2_5.jinja`. The text was
    decoded from a quotation of that field in public code and checked against other copies of it.

    Without a system message it writes Qwen's default one ("You are Qwen, created by Alibaba
    Cloud. You are a helpful assistant."); with `tools=[...]` it writes the tool preamble, and it
    renders assistant `tool_calls` and `tool` messages as Qwen2.5 was trained on them. Plain
    system/user/assistant chats render as the ChatML template this module hard-coded before.
    """
    resource = importlib.resources.files("medr3_jax.models").joinpath(QWEN2_5_CHAT_TEMPLATE_FILE)
    return resource.read_text(encoding="utf-8")


def _read_tiktoken_ranks(path: str) -> dict[bytes, int]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such tiktoken ranks file")
    ranks: dict[bytes, int] = {}
    with open(path, "rb") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except ValueError as err:
                raise ValueError(f"{path}:{line_no}: not a 'base64 rank' line ({err})") from err
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"{path}: ranks are not the distinct ids 0..{len(ranks) - 1}")
    return ranks


def _merges_from_ranks(ranks: Mapping[bytes, int]) -> list[tuple[str, str]]:
    """All (left, right) splits of each token into two lower-rank tokens, by merged rank."""
    found: list[tuple[int, int, int, bytes, bytes]] = []
    for token, rank in ranks.items():
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in ranks and right in ranks:
                found.append((rank, ranks[left], ranks[right], left, right))
    found.sort()
    return [(_byte_spelling(left), _byte_spelling(right)) for *_, left, right in found]


# ---- protocol tags in token space --------------------------------------------------------------
def tag_token_ids(tok: Tokenizer, tag: str) -> list[tuple[int, ...]]:
    """The distinct ways `tag` tokenises in running text: at the very start, at a line start
    and after a space (where the space may merge into the tag's first token, e.g. ' <').

    Used to recognise protocol tags in generated ids without re-tokenising.
    """
    anchor = tok.encode("x")
    found: list[tuple[int, ...]] = []
    for context in ("", "\n", " "):
        if not context:
            ids = tuple(tok.encode(tag))
        else:
            full = tok.encode("x" + context + tag)
            prefix = tok.encode("x" + context)
            cut = len(prefix) if full[: len(prefix)] == prefix else len(anchor)
            if full[: len(anchor)] != anchor:
                raise ValueError(f"{tok.path}: cannot isolate the tokens of {tag!r} after {context!r}")
            ids = tuple(full[cut:])
        if ids not in found:
            found.append(ids)
    return found


def byte_tokenizer(eos_id: int = 0) -> Tokenizer:
    """One token per byte (ids 0..255, GPT-2 byte alphabet), byte `eos_id` doubling as EOS.

    For tests and benchmarks with random weights: every string spans one token per byte, so
    multi-token stop strings are the norm, and no vocabulary file is needed.
    """
    alphabet = _byte_alphabet()
    backend = tokenizers.Tokenizer(models.BPE(vocab={ch: b for b, ch in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    return Tokenizer(backend=backend, eos_id=eos_id, pad_id=eos_id, path="<bytes>")
