"""Docstrings write their formulas in plain text (`eps = rho g / ||g||`), readable in
`help()`, as indented blocks or inline. For the API reference each such block becomes a
literal block, and elsewhere `|` and `*` outside backquotes are escaped, so both are shown
as written instead of parsed as reStructuredText markup (substitutions, emphasis)."""

import re

DIRECTIVE = re.compile(r"^\s*(\.\. |:\w[^:]*:|>>>)")


def indent(line: str) -> int:
  return len(line) - len(line.lstrip())


def escaped(line: str) -> str:
  """`line` with | and * escaped outside `...` spans (and outside fields' leading markup)."""
  if DIRECTIVE.match(line):
    head, _, tail = line.partition(": ") if line.lstrip().startswith(":") else ("", "", line)
    return head + (": " if head else "") + escaped_text(tail)
  return escaped_text(line)


def escaped_text(text: str) -> str:
  parts = text.split("`")
  return "`".join(
      re.sub(r"(?<!\\)([|*])", r"\\\1", part) if i % 2 == 0 else part
      for i, part in enumerate(parts))


def literal_blocks(lines: list[str]) -> list[str]:
  """`lines` with each block indented deeper than the paragraph before it, after a blank
  line, turned into a literal block (an added `::` paragraph)."""
  out: list[str] = []
  previous = None  # the last non-blank line
  literal = None  # the indentation of the literal block being copied, if any
  for i, line in enumerate(lines):
    if literal is not None and line.strip() and indent(line) < literal:
      literal = None
    starts_block = (
        line.strip() and i > 0 and not lines[i - 1].strip() and previous is not None
        and indent(line) > indent(previous) and not previous.rstrip().endswith("::")
        and not DIRECTIVE.match(previous) and not DIRECTIVE.match(line))
    if starts_block:
      out += ["::", ""]
      literal = indent(line)
    out.append(line if literal is not None or line.lstrip().startswith(">>>") else escaped(line))
    if line.strip():
      previous = line
  return out


def process(app, what, name, obj, options, lines) -> None:
  del app, what, name, obj, options
  lines[:] = literal_blocks(lines)


def setup(app):
  app.connect("autodoc-process-docstring", process, priority=600)  # after napoleon's (500)
  return {"parallel_read_safe": True}
