"""Message content: campaign text personalised from state, always as plain text.

Templates are Jinja2 in its sandboxed environment (no attribute access to Python internals, no
I/O), compiled once when campaigns load. Output is text: the snippet sets it with ``textContent``,
so nothing here escapes HTML, and nothing from event data can become markup. A missing value
renders as nothing, never as "None" or "undefined".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from jinja2 import ChainableUndefined, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from nudge.rules.state import State

# The names a template may use.
CONTEXT_NAMES = frozenset({"cart", "visitor", "session", "event", "page"})


def _money(value: Any, currency: str = "$") -> str:
    try:
        return f"{currency}{float(value):,.2f}"
    except (TypeError, ValueError):
        return ""


class _Blank(ChainableUndefined):
    """Undefined that renders as nothing and never raises, however deep the lookup."""

    def __str__(self) -> str:
        return ""


def _finalize(value: Any) -> Any:
    # None (a trait set to null, say) renders as nothing rather than "None".
    return "" if value is None else value


ENVIRONMENT = ImmutableSandboxedEnvironment(
    autoescape=False, undefined=_Blank, finalize=_finalize, keep_trailing_newline=False
)
ENVIRONMENT.filters["money"] = _money
ENVIRONMENT.filters["take"] = lambda items, n=3: list(items)[: max(0, int(n))] if items else []


class TemplateProblem(ValueError):
    """A template does not compile or names something that does not exist."""


def compile_text(source: str):
    """Compile one text template; raise :class:`TemplateProblem` with a readable reason."""
    try:
        ast = ENVIRONMENT.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax: {exc.message}") from None
    unknown = meta.find_undeclared_variables(ast) - CONTEXT_NAMES
    if unknown:
        names = ", ".join(sorted(unknown))
        raise TemplateProblem(
            f"template uses {names}, which does not exist; use {', '.join(sorted(CONTEXT_NAMES))}"
        )
    if "{" not in source:
        return None  # plain text: nothing to render
    return ENVIRONMENT.from_string(source)


TEXT_FIELDS = ("title", "body", "dismiss")

_OUTPUT = re.compile(r"\{\{-?(.*?)-?\}\}", re.S)
# Filters whose result is never empty text: a number, or the fallback given.
_NEVER_EMPTY = frozenset({"default", "d", "length", "count", "money", "int", "float", "round", "sum"})
# Visitor fields always there; every other ``visitor.`` name is a trait, which may not be sent.
_VISITOR_ALWAYS = frozenset({"id", "sessions"})


def blank_risks(source: str) -> list[str]:
    """The ``{{ … }}`` of a (valid) template that can render as nothing: a cart name or item
    (the cart may be empty) or a visitor trait (it may never have been sent), with no
    ``default``. ``'…' if …`` expressions are empty on purpose and not reported."""
    risky = []
    for match in _OUTPUT.finditer(source):
        expression = match.group(1).strip()
        try:
            output = ENVIRONMENT.parse("{{ " + expression + " }}").body[0]
        except (TemplateSyntaxError, IndexError):
            continue
        node = output.nodes[0] if isinstance(output, nodes.Output) and output.nodes else None
        if node is not None and _can_be_blank(node):
            risky.append(expression)
    return risky


def _can_be_blank(node: nodes.Node) -> bool:
    if isinstance(node, nodes.CondExpr):
        return False  # empty when its test is false: written that way
    if isinstance(node, nodes.Filter) and node.name in _NEVER_EMPTY:
        return False
    found = [node] if isinstance(node, nodes.Getattr) else []
    for name in [*found, *node.find_all(nodes.Getattr)]:
        if isinstance(name.node, nodes.Name):
            if name.node.name == "cart" and name.attr in ("names", "items"):
                return True
            if name.node.name == "visitor" and name.attr not in _VISITOR_ALWAYS:
                return True
    return False


@dataclass(frozen=True, slots=True)
class MessageTemplate:
    kind: str  # modal | banner | toast | slidein
    position: str | None  # banners: top | bottom
    texts: dict[str, tuple[str, Any]]  # field -> (source, compiled template or None)
    cta_label: tuple[str, Any] | None
    cta_url: str | None
    theme: dict[str, str]

    def render(self, state: State, event_props: dict | None) -> dict:
        """The message's fields, personalised from ``state``; plain text only."""
        context = None
        out: dict[str, Any] = {"kind": self.kind}
        if self.position:
            out["position"] = self.position
        for name, (source, template) in self.texts.items():
            if template is None:
                out[name] = source
            else:
                context = context or _context(state, event_props)
                out[name] = template.render(context).strip()
        if self.cta_label is not None:
            source, template = self.cta_label
            if template is not None:
                context = context or _context(state, event_props)
                source = template.render(context).strip()
            out["cta"] = {"label": source, "url": self.cta_url}
        if self.theme:
            out["theme"] = self.theme
        return out


def _context(state: State, event_props: dict | None) -> dict:
    visitor, session = state.visitor, state.session
    cart = visitor.cart
    return {
        "cart": {
            "items": [
                {"id": i.id, "name": i.name, "price": i.price, "quantity": i.quantity}
                for i in cart.items.values()
            ],
            "names": cart.names,
            "count": cart.count,
            "value": cart.value,
        },
        "visitor": {"id": visitor.id, "sessions": visitor.sessions, **visitor.traits},
        "session": (
            {"page": session.page, "scroll": session.scroll_depth, "counters": dict(session.counters)}
            if session is not None
            else {}
        ),
        "page": {"path": session.page} if session is not None else {},
        "event": dict(event_props or {}),
    }
