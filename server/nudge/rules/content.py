"""Message content: campaign text personalised from state, always as plain text.

Templates are Jinja2 in its sandboxed environment (no attribute access to Python internals, no
I/O), compiled once when campaigns load. Output is text: the snippet sets it with ``textContent``,
so nothing here escapes HTML, and nothing from event data can become markup. A missing value
renders as nothing, never as "None" or "undefined".

A template's cost is bounded, as it runs on numbers and text a visitor sends (``{{ 'x' *
event.n }}`` with n = 10⁹ was a gigabyte, and seconds of every visitor's time): no value it makes
— a repeated string or list, a padded or replaced string, a power — may pass MAX_TEXT characters
(or 4,096 bits), ``range`` stops at MAX_RANGE, its output is clipped at MAX_TEXT characters, and
what has no bound at all is refused when the campaigns load: nested loops, recursive loops,
macros, and the globals ``namespace``, ``lipsum``, ``cycler`` and ``joiner``. Past a bound the
render fails with :class:`TemplateLimit`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from jinja2 import ChainableUndefined, Template, TemplateSyntaxError, meta, nodes
from jinja2.filters import FILTERS
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from nudge.rules import values
from nudge.rules.state import State

# The names a template may use.
CONTEXT_NAMES = frozenset({"cart", "visitor", "session", "event", "page"})


MAX_TEXT = 2000  # characters of any string or list a template makes, and of its output
MAX_RANGE = 1000  # numbers one range() gives
MAX_BITS = 4096  # of an integer a template computes


class TemplateLimit(SecurityError):
    """A template went past one of the bounds on its cost (at render time)."""


def _money(value: Any, currency: str = "$") -> str:
    try:
        return f"{currency}{float(value):,.2f}"
    except (TypeError, ValueError, OverflowError):
        return ""


def _sized(n: Any, what: str) -> None:
    if isinstance(n, int) and n > MAX_TEXT:
        raise TemplateLimit(f"{what} of {n} characters: a template makes at most {MAX_TEXT}")


def _repeat_check(left: Any, right: Any) -> None:
    for sequence, times in ((left, right), (right, left)):
        if isinstance(sequence, (str, list, tuple)) and isinstance(times, int):
            _sized(len(sequence) * times, "a repetition")
    if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > MAX_BITS:
        raise TemplateLimit(f"a product of more than {MAX_BITS} bits")


def _power_check(base: Any, exponent: Any) -> None:
    growing = isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1
    if growing and base.bit_length() * exponent > MAX_BITS:
        raise TemplateLimit(f"a power of more than {MAX_BITS} bits")


def _format_check(text: Any) -> None:
    # '%0100000000d' % 1 is 100 MB: no width or precision of three digits or more.
    if isinstance(text, str) and re.search(r"%[^a-zA-Z%]*\d{3}", text):
        raise TemplateLimit("a format width or precision of 100 or more")


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, with the operators that can make huge values checked first. (Intercepted
    operators are never folded when a template compiles, so constants are checked too.)"""

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _repeat_check(left, right)
        elif operator == "**":
            _power_check(left, right)
        elif operator == "%":
            _format_check(left)
        return super().call_binop(context, operator, left, right)


def _range(*args: Any) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise TemplateLimit(f"a range of {len(numbers)} numbers: at most {MAX_RANGE}")
    return numbers


def _bounded(name: str, check: Callable[..., None]) -> Callable[..., Any]:
    """Jinja's filter ``name``, its arguments checked by ``check`` first."""
    original = FILTERS[name]

    def bounded(*args: Any, **kwargs: Any) -> Any:
        check(*args, **kwargs)
        return original(*args, **kwargs)

    bounded.__name__ = name
    return bounded


def _width(value: Any, width: Any = 80, *args: Any, **kwargs: Any) -> None:
    _sized(width, "a width")


def _indent(value: Any, width: Any = 4, *args: Any, **kwargs: Any) -> None:
    if isinstance(width, int):
        _sized(width * (str(value).count("\n") + 1) + len(str(value)), "an indented text")
    elif isinstance(width, str):
        _sized(len(width) * (str(value).count("\n") + 1) + len(str(value)), "an indented text")


def _replace(value: Any, old: Any, new: Any, count: Any = None) -> None:
    if isinstance(old, str) and isinstance(new, str):
        text = str(value)
        times = text.count(old) if old else len(text) + 1
        if isinstance(count, int) and count >= 0:
            times = min(times, count)
        _sized(len(text) + times * max(0, len(new) - len(old)), "a replaced text")


def _format(value: Any, *args: Any, **kwargs: Any) -> None:
    _format_check(value)


def _batch(value: Any, linecount: Any, *args: Any, **kwargs: Any) -> None:
    _sized(linecount, "a batch")


def _slice(value: Any, slices: Any, *args: Any, **kwargs: Any) -> None:
    _sized(slices, "a slice count")


class _Blank(ChainableUndefined):
    """Undefined that renders as nothing and never raises, however deep the lookup."""

    def __str__(self) -> str:
        return ""


def _finalize(value: Any) -> Any:
    # None (a trait set to null, say) renders as nothing rather than "None".
    return "" if value is None else value


ENVIRONMENT = _BoundedEnvironment(
    autoescape=False, undefined=_Blank, finalize=_finalize, keep_trailing_newline=False
)
for _name in ("namespace", "lipsum", "cycler", "joiner"):  # unbounded state, or output
    del ENVIRONMENT.globals[_name]
ENVIRONMENT.globals["range"] = _range
for _name, _check in (("center", _width), ("indent", _indent),
                      ("replace", _replace), ("format", _format), ("batch", _batch), ("slice", _slice)):
    ENVIRONMENT.filters[_name] = _bounded(_name, _check)
ENVIRONMENT.filters["money"] = _money
ENVIRONMENT.filters["take"] = lambda items, n=3: list(items)[: max(0, int(n))] if items else []


class TemplateProblem(ValueError):
    """A template does not compile or names something that does not exist."""


@functools.lru_cache(maxsize=4096)
def compile_text(source: str) -> BoundedText | None:
    """Compile one text template; raise :class:`TemplateProblem` with a readable reason.

    Kept by source (a compiled template is immutable and shared): a document validated again
    whole — every change through the admin API, every check the editor makes as you type —
    compiles only the texts that changed."""
    if values.has_lone_surrogate(source):
        raise TemplateProblem("text holds a lone UTF-16 surrogate (half of a pair): not valid Unicode")
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
    if (unbounded := _unbounded(ast)) is not None:
        raise TemplateProblem(f"template cost has no bound: {unbounded}")
    if "{" not in source:
        return None  # plain text: nothing to render
    return BoundedText(ENVIRONMENT.from_string(source))


def _unbounded(ast: nodes.Template) -> str | None:
    """Why a template's cost would have no bound whatever the values it gets, or None."""
    if ast.find(nodes.Macro) is not None or ast.find(nodes.CallBlock) is not None:
        return "no macros or call blocks"
    for loop in ast.find_all(nodes.For):
        if loop.recursive:
            return "no recursive loops"
        if any(inner.find(nodes.For) is not None or isinstance(inner, nodes.For) for inner in (*loop.body, *loop.else_)):
            return "loops may not nest (a loop over at most 1,000 items is the bound)"
    return None


class BoundedText:
    """A compiled template whose output stops at MAX_TEXT characters."""

    __slots__ = ("template",)

    def __init__(self, template: Template) -> None:
        self.template = template

    def render(self, context: dict[str, Any]) -> str:
        out, size = [], 0
        for chunk in self.template.generate(context):
            out.append(chunk)
            size += len(chunk)
            if size > MAX_TEXT:
                break
        return "".join(out)[:MAX_TEXT]


# Lookups that always hold a number, whatever the visitor did: arithmetic on them cannot fail.
_ALWAYS_NUMBERS = frozenset({"cart.count", "cart.value"})
_ARITHMETIC = (nodes.Add, nodes.Sub, nodes.Mul, nodes.Div, nodes.FloorDiv, nodes.Mod, nodes.Pow)
_ORDERING = frozenset({"lt", "lteq", "gt", "gteq"})


def risks(source: str) -> list[str]:
    """How a template that compiles can still fail when it renders, found in its syntax tree:
    a division (``/``, ``//``, ``%``) by anything but a constant other than 0 (``cart.count`` is
    0 for an empty cart), and arithmetic or an ordering on a value from the visitor's data
    (``visitor.age + 1``: a trait may be missing, or text). Each such failure suppresses the
    campaign at that moment (reason ``template``); this is what ``nudge check`` warns about."""
    if "{" not in source:
        return []
    ast = ENVIRONMENT.parse(source)
    guarded = _guarded(ast)
    found: list[str] = []
    for node in ast.find_all((nodes.Div, nodes.FloorDiv, nodes.Mod)):
        divisor = node.right
        if id(node) in guarded:
            continue
        if not (isinstance(divisor, nodes.Const) and isinstance(divisor.value, int | float) and divisor.value):
            found.append(f"divides by {_shown(divisor)}, which can be 0 (an empty cart's count, say)")
    operands: list[nodes.Node] = []
    for expr in ast.find_all((*_ARITHMETIC, nodes.Neg, nodes.Pos, nodes.Compare)):
        if isinstance(expr, nodes.Compare):
            if any(op.op in _ORDERING for op in expr.ops):
                operands += [expr.expr, *(op.expr for op in expr.ops)]
        elif isinstance(expr, nodes.UnaryExpr):
            operands.append(expr.node)
        elif isinstance(expr, nodes.BinExpr):
            operands += [expr.left, expr.right]
    for operand in operands:
        name = _lookup(operand)
        if name is not None and name not in _ALWAYS_NUMBERS:
            found.append(f"does arithmetic on {name}, which a visitor's data can leave missing or not a number (give it a default)")
    return list(dict.fromkeys(found))


def _guarded(ast: nodes.Template) -> set[int]:
    """Divisions under a test of their divisor (``{% if cart.count %}``, ``… if cart.count``)."""
    guarded: set[int] = set()
    for test in ast.find_all((nodes.If, nodes.CondExpr)):
        assert isinstance(test, nodes.If | nodes.CondExpr)
        tested = {_lookup(n) for n in (test.test, *test.test.find_all((nodes.Getattr, nodes.Getitem)))}
        bodies = test.body if isinstance(test, nodes.If) else [test.expr1]
        for body in bodies:
            for node in body.find_all((nodes.Div, nodes.FloorDiv, nodes.Mod)):
                if _lookup(node.right) in tested:
                    guarded.add(id(node))
    return guarded


def _lookup(node: nodes.Node) -> str | None:
    """``visitor.age`` for a lookup into the context (attribute or constant item), else None."""
    parts: list[str] = []
    while isinstance(node, nodes.Getattr | nodes.Getitem):
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
        else:
            parts.append(str(node.arg.value) if isinstance(node.arg, nodes.Const) else "[…]")
        node = node.node
    if isinstance(node, nodes.Name) and node.name in CONTEXT_NAMES:
        return ".".join([node.name, *reversed(parts)])
    return None


def _shown(node: nodes.Node) -> str:
    name = _lookup(node)
    if name is not None:
        return name
    if isinstance(node, nodes.Const):
        return repr(node.value)
    return "an expression"


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

    def render(self, state: State, event_props: dict[str, Any] | None) -> dict[str, Any]:
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


def _context(state: State, event_props: dict[str, Any] | None) -> dict[str, Any]:
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


_EXPRESSION = re.compile(r"\{\{.*?\}\}", re.S)
_CONDITIONAL = re.compile(r"\bif\b")


def empty_parts(message: MessageTemplate, state: State, event_props: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Where ``message`` renders empty for ``state``: each text field that renders as nothing,
    and each ``{{ … }}`` of a field that does (a name the visitor has no value for, an empty
    cart) — what an editor warns about before the message goes live. Everything is rendered by
    :meth:`MessageTemplate.render`, the server's one rendering (each expression as a message of
    its own); expressions inside ``{% … %}`` blocks are not looked at one by one (their loop
    variables exist only inside the block), nor are conditional ones (``{{ 's' if … }}``), empty
    on purpose."""
    out: list[dict[str, Any]] = []
    fields = dict(message.texts)
    if message.cta_label is not None:
        fields["cta.label"] = message.cta_label
    rendered = None
    for name, (source, template) in fields.items():
        if template is None:
            continue
        rendered = rendered or message.render(state, event_props)
        value = rendered["cta"]["label"] if name == "cta.label" else rendered.get(name)
        if not value:
            out.append({"field": name, "expression": None})
        if "{%" in source:
            continue
        for expression in _EXPRESSION.findall(source):
            if _CONDITIONAL.search(expression):
                continue  # `{{ 's' if cart.count != 1 }}`: empty on purpose
            try:
                alone = replace(message, texts={"text": (expression, compile_text(expression))}, cta_label=None)
            except TemplateProblem:
                continue  # cut where a quoted "}}" is not the expression's end: not looked at alone
            if not alone.render(state, event_props).get("text"):
                out.append({"field": name, "expression": expression})
    return out
