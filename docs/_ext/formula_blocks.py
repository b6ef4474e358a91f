"""Docstrings write their displayed formulas in TeX (`.. math::`, rendered by MathJax) and
the rest in plain text, readable in `help()`: inline formulas (`eps = rho g / ||g||`) and
indented blocks (lists of formats, commands). For the API reference each indented block
that is not a directive's body becomes a literal block, and elsewhere `|` and `*` outside
backquotes are escaped, so both are shown as written instead of parsed as
reStructuredText markup (substitutions, emphasis). A directive's body (the TeX of a
`.. math::`) is left as written."""

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
  line, turned into a literal block (an added `::` paragraph); the body of a directive
  (`.. math::`) or of a `::` paragraph stays as written."""
  out: list[str] = []
  previous = None  # the last non-blank line
  verbatim = None  # the indentation of the block being copied as written, if any
  for i, line in enumerate(lines):
    if verbatim is not None and line.strip() and indent(line) < verbatim:
      verbatim = None
    starts_block = (
        verbatim is None and line.strip() and i > 0 and not lines[i - 1].strip()
        and previous is not None and indent(line) > indent(previous) and not DIRECTIVE.match(line))
    if starts_block and previous.rstrip().endswith("::"):
      verbatim = indent(line)  # the body of `.. math::` or of a literal paragraph
    elif starts_block and not DIRECTIVE.match(previous):
      out += ["::", ""]
      verbatim = indent(line)
    out.append(line if verbatim is not None or line.lstrip().startswith(">>>") else escaped(line))
    if line.strip():
      previous = line
  return out


def process(app, what, name, obj, options, lines) -> None:
  del app, what, name, obj, options
  lines[:] = literal_blocks(lines)


def setup(app):
  app.connect("autodoc-process-docstring", process, priority=600)  # after napoleon's (500)
  return {"parallel_read_safe": True}
