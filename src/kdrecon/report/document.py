"""A minimal document of typed blocks, each rendered once as Markdown and once as HTML.

Example:
    >>> document = Document([Heading("Results"), Table(["model", "PSNR"], [["teacher", "32.10"]])])
    >>> print(document.markdown(Path(".")))
    ## Results
    <BLANKLINE>
    | model | PSNR |
    |---|---|
    | teacher | 32.10 |
    <BLANKLINE>
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

_STYLE = (
    "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:0.8em 0}td,th{border:1px solid #bbb;padding:3px 8px;"
    "text-align:right}td:first-child,th:first-child{text-align:left}th{background:#eee}"
    "img{max-width:100%}pre{background:#f6f6f6;padding:0.8em;overflow:auto}figcaption{font-style:italic}"
)


class Block(Protocol):
    def markdown(self, root: Path) -> str: ...

    def html(self) -> str: ...


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2

    def markdown(self, root: Path) -> str:
        return "#" * self.level + " " + self.text

    def html(self) -> str:
        return f"<h{self.level}>{html.escape(self.text)}</h{self.level}>"


@dataclass(frozen=True)
class Paragraph:
    text: str

    def markdown(self, root: Path) -> str:
        return self.text

    def html(self) -> str:
        return f"<p>{html.escape(self.text)}</p>"


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[Any]]

    def cells(self) -> list[list[str]]:
        return [[str(cell) for cell in row] for row in self.rows]

    def markdown(self, root: Path) -> str:
        lines = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in self.cells()])

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in self.cells())
        return f"<table><tr>{head}</tr>{body}</table>"


@dataclass(frozen=True)
class Image:
    path: Path
    caption: str

    def markdown(self, root: Path) -> str:
        return f"![{self.caption}]({self.path.relative_to(root).as_posix()})\n\n*{self.caption}*"

    def html(self) -> str:
        data = base64.b64encode(self.path.read_bytes()).decode("ascii")
        return (f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(self.caption)}'>"
                f"<figcaption>{html.escape(self.caption)}</figcaption></figure>")


@dataclass(frozen=True)
class Code:
    text: str
    language: str = "yaml"

    def markdown(self, root: Path) -> str:
        return f"```{self.language}\n" + self.text.rstrip() + "\n```"

    def html(self) -> str:
        return f"<pre>{html.escape(self.text)}</pre>"


@dataclass
class Document:
    blocks: list[Block] = field(default_factory=list)

    def extend(self, blocks: list[Block]) -> None:
        self.blocks.extend(blocks)

    def markdown(self, root: Path) -> str:
        """Markdown with image paths relative to ``root`` (the report's directory)."""
        return "\n\n".join(block.markdown(root) for block in self.blocks) + "\n"

    def html(self, title: str) -> str:
        """A self-contained HTML page: figures embedded, nothing fetched from the network."""
        head = f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        return "\n".join([head] + [block.html() for block in self.blocks] + ["</body></html>"])
