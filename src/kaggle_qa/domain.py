"""The documentation the project is about: one typed value read from the ``domain:`` parameters.

Every product string that names the docs (question templates, teacher prompts, the refusal,
the chat greeting, the datasheet, the server's model card) is written with placeholders and
filled from one :class:`Domain`, so an environment folder (``conf/<site>/parameters.yml``)
retargets all of them by overriding the ``domain:`` block::

    domain:
      name: Click                        # {domain} / $domain
      docs_title: the Click documentation  # {docs_title} / $docs_title
      audience: Click users              # {audience} / $audience
      user_noun: null                    # {user_noun}: a word for the users, or null
      docs_url: https://click.palletsprojects.com/
      licence: "BSD-3-Clause (the docs' own licence)"  # {licence}

Templates that need a field the domain leaves null (``{user_noun}``) are dropped by
:func:`fill_templates` instead of rendering a hole.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from string import Template
from typing import Any

# placeholder name -> Domain field
PLACEHOLDERS = {
    "domain": "name",
    "docs_title": "docs_title",
    "Docs_title": "docs_title",  # capitalised, for the start of a sentence
    "audience": "audience",
    "user_noun": "user_noun",
    "docs_url": "docs_url",
    "licence": "licence",
}
# Words for a prompt rendered with no domain (a test, or a caller that has none): nothing named.
UNNAMED = {"domain": "the product", "docs_title": "the documentation", "Docs_title": "The documentation",
           "audience": "its users"}
_BRACED = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")


@dataclass(frozen=True)
class Domain:
    """The docs' name and audience (see the module docstring for each field's placeholder)."""

    name: str
    docs_title: str
    audience: str
    docs_url: str
    user_noun: str | None = None
    licence: str | None = None

    def __post_init__(self) -> None:
        for key in ("name", "docs_title", "audience", "docs_url"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"parameters domain.{key}: expected a non-empty string, got {value!r}")
        for key in ("user_noun", "licence"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"parameters domain.{key}: expected a non-empty string or null, got {value!r}")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Domain:
        """The domain from Kedro's parameters: either all of them (with a ``domain`` key) or the block."""
        block = params.get("domain", params) if isinstance(params, Mapping) else params
        if not isinstance(block, Mapping):
            raise ValueError("parameters domain: expected a mapping (conf/base/parameters.yml `domain:` block)")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(block) - known)
        if unknown:
            raise ValueError(f"parameters domain: unknown key(s) {unknown}; known: {sorted(known)}")
        missing = sorted(k for k in ("name", "docs_title", "audience", "docs_url") if k not in block)
        if missing:
            raise ValueError(f"parameters domain: missing key(s) {missing}")
        return cls(**dict(block))

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)

    def placeholders(self) -> dict[str, str]:
        """Placeholder name -> text, for the fields that are set."""
        values = {}
        for placeholder, field in PLACEHOLDERS.items():
            value = getattr(self, field)
            if value is not None:
                values[placeholder] = capitalise(value) if placeholder[0].isupper() else value
        return values


def capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def needs(template: str) -> set[str]:
    """The domain placeholders a ``{...}`` template uses."""
    return set(_BRACED.findall(template))


def fill(template: str, domain: Domain) -> str:
    """Replace the domain's ``{placeholders}`` in a template, leaving every other ``{field}`` as it is.

    Raises when the template needs a field the domain leaves null.
    """
    values = domain.placeholders()
    missing = sorted(needs(template) - set(values))
    if missing:
        raise ValueError(f"template {template!r} needs domain field(s) {missing}, which are null")
    return _BRACED.sub(lambda m: values[m.group(1)], template)


def fill_templates(templates: Iterable[str], domain: Domain) -> list[str]:
    """Each template filled from the domain; those needing a null field are left out."""
    values = domain.placeholders()
    return [fill(t, domain) for t in templates if needs(t) <= set(values)]


def fill_prompt(template: str, domain: Domain | None, **fields: Any) -> str:
    """A ``$placeholder`` (string.Template) prompt filled from the domain and `fields`; with no
    domain, the generic words of :data:`UNNAMED` ("the documentation", "its users").

    Unknown ``$names`` raise KeyError naming them, as string.Template does.
    """
    values = domain.placeholders() if domain is not None else UNNAMED
    return Template(template).substitute(values | fields)


def refusal_message(domain: Domain) -> str:
    """What the assistant says when retrieval finds nothing relevant enough."""
    return f"{capitalise(domain.docs_title)} does not cover this question, so I cannot answer it from the docs."


def chat_greeting(domain: Domain) -> str:
    """The first line of ``chat``."""
    return f"Ask about {domain.docs_title} (empty line or Ctrl-D to quit)."
