"""The config reference page, generated at build time from configs/default.py: its fields,
types, defaults and comments, the same text `--helpfull` prints
(`sam_jax.config_files.field_help`), so the two cannot disagree."""

import os
import re

from configs import default
from sam_jax import config_files

HEADING = re.compile(r"^\s*# == (.+) ==")
PAGE = "reference/config.md"


def cell(text: str) -> str:
  return text.replace("|", "\\|")


def page(schema_path: str) -> str:
  """The markdown page: one table per `# == Section ==` of the schema."""
  config, helps = default.get_config(), config_files.field_help(schema_path)
  described = {name: (kind, value) for name, kind, value in config_files.fields(config)}
  sections: dict[str, list[str]] = {"General": []}
  section = "General"
  with open(schema_path, encoding="utf-8") as f:
    for line in f:
      if heading := HEADING.match(line):
        section = heading[1]
        sections.setdefault(section, [])
      elif (field := config_files.FIELD.match(line)) and field[1] in described:
        sections[section].append(field[1])
  lines = [
      "# Config reference", "",
      "Every field of `configs/default.py`, the schema every config file starts from, with its",
      "type, its default and its comment there (the text `python -m sam_jax.train --helpfull`",
      "prints). Set any of them on the command line: `--config.sam.rho=0.1`. This page is",
      "generated from that file when the documentation is built.", ""
  ]
  for section, names in sections.items():
    if not names:
      continue
    lines += [f"## {section}", "", "| field | type | default | what it is |", "| --- " * 4 + "|"]
    for name in names:
      kind, value = described[name]
      lines.append(f"| `{name}` | {kind} | `{cell(repr(value))}` | {cell(helps.get(name, ''))} |")
    lines.append("")
  return "\n".join(lines)


def write(app) -> None:
  path = os.path.join(app.srcdir, PAGE)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  text = page(default.__file__)
  if not os.path.exists(path) or open(path, encoding="utf-8").read() != text:
    with open(path, "w", encoding="utf-8") as f:
      f.write(text)


def setup(app):
  app.connect("builder-inited", write)
  return {"parallel_read_safe": True}
