"""The medical corpus: MedRAG / MedCorp chunk files, streamed, and a chunker for plain text.

MedCorp chunk files (`corpus/<name>/chunk/*.jsonl`) hold one `{"id", "title", "content",
"contents"}` object per line, lines joined by "\\n" with no trailing newline. `contents` is
what gets embedded and shown to the policy: `title. content` (MedRAG's rule, below).

    for passage in read_chunks(["corpus/textbooks/chunk", "corpus/pubmed/chunk"]):
        ...
    chunks = chunk_text(markdown, tokenizer_backend, window=256, overlap=32)
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import Any, Iterable, Iterator, Sequence


class CorpusError(ValueError):
    """Bad corpus input; the message names the file and line."""


@dataclasses.dataclass(frozen=True)
class Passage:
    id: str
    title: str
    content: str
    contents: str  # title + content, the text that is embedded and inserted into rollouts


def medrag_contents(title: str, content: str) -> str:
    """MedRAG's `contents`: title and content joined by ". " (or " " after . ? !)."""
    title, content = title.strip(), content.strip()
    if not title:
        return content
    return title + (" " if title.endswith((".", "?", "!")) else ". ") + content


def chunk_files(paths: Sequence[str]) -> list[str]:
    """`*.jsonl` files under the given files/directories (recursively), in sorted order."""
    files: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(glob.glob(os.path.join(path, "**", "*.jsonl"), recursive=True))
            if not found:
                raise CorpusError(f"{path}: directory holds no *.jsonl chunk files")
            files += found
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise CorpusError(f"{path}: no such file or directory")
    return files


def read_chunks(paths: Sequence[str]) -> Iterator[Passage]:
    """Streams passages from MedCorp chunk files, one line at a time."""
    for file in chunk_files(paths):
        with open(file, encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                if not line.strip():
                    raise CorpusError(f"{file}:{line_no}: empty line (chunk files hold one JSON object per line)")
                yield _parse_line(line, file, line_no)


def _parse_line(line: str, file: str, line_no: int) -> Passage:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise CorpusError(f"{file}:{line_no}: not valid JSON ({err.msg} at column {err.colno})") from err
    if not isinstance(obj, dict):
        raise CorpusError(f"{file}:{line_no}: expected a JSON object, got {type(obj).__name__}")
    for key in ("id", "title", "content"):
        if not isinstance(obj.get(key), str):
            raise CorpusError(f"{file}:{line_no}: field {key!r} missing or not a string")
    if not obj["id"]:
        raise CorpusError(f"{file}:{line_no}: empty id")
    contents = obj.get("contents")
    if contents is None:
        contents = medrag_contents(obj["title"], obj["content"])
    elif not isinstance(contents, str):
        raise CorpusError(f"{file}:{line_no}: field 'contents' is not a string")
    return Passage(id=obj["id"], title=obj["title"], content=obj["content"], contents=contents)


def write_chunks(passages: Iterable[Passage], file: str) -> None:
    """Writes a chunk file exactly as MedRAG does (default json.dumps, no trailing newline)."""
    lines = [json.dumps({"id": p.id, "title": p.title, "content": p.content, "contents": p.contents}) for p in passages]
    with open(file, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))


def chunk_text(text: str, tokenizer: Any, *, window: int, overlap: int) -> list[str]:
    """Token windows of `window` tokens, consecutive windows sharing `overlap` tokens.

    `tokenizer` is a `tokenizers.Tokenizer`; each chunk is the exact slice of `text` its
    tokens cover (offsets), so no text is re-normalised.
    """
    if not 0 <= overlap < window:
        raise ValueError(f"chunk_text: need 0 <= overlap ({overlap}) < window ({window})")
    if tokenizer.truncation is not None or tokenizer.padding is not None:
        # A copy without truncation: a truncated encoding would silently drop text.
        tokenizer = type(tokenizer).from_str(tokenizer.to_str())
        tokenizer.no_truncation()
        tokenizer.no_padding()
    offsets = [o for o in tokenizer.encode(text, add_special_tokens=False).offsets if o[1] > o[0]]
    chunks: list[str] = []
    start = 0
    while start < len(offsets):
        end = min(start + window, len(offsets))
        chunks.append(text[offsets[start][0] : offsets[end - 1][1]])
        if end == len(offsets):
            break
        start = end - overlap
    return chunks
