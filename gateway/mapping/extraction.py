"""A route's `extract:` evaluated by one generated function instead of one call per field.

Most extractions are plain paths (`data.sender.id`) and the paths of one route share
their prefixes (`data`, `data.sender`): evaluated one by one, a route of ten fields made
thirty `.get` calls through ten closures. `Extraction` generates, at its first call, one
Python function for all the pairs of a route: each prefix is looked up once, into a local
variable, and the fields are assigned in the order they are written. An expression that
is not a plain path is called as it is (`Expr.search`, which raises ExpressionError).

The result is the one of the pairs evaluated in order with `Expr.search`, the fields
that come out null left out, and with `exact=True` the numbers (not booleans) of id
fields (`values.is_id_field`) turned into exact text (`values.to_str`: CXone and most
APIs take ids as strings); tests/test_mapping_extraction.py checks it against that
definition on every shipped route and on generated data. A lookup is `.get` on the
value, None when the value has none (not an object), as for the closures of
`expr_closures.path_closure`.

The generated source holds no text from the mapping file: keys and field names enter it
as `repr()` string literals, expressions as names bound in the function's namespace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from gateway.mapping.expressions import Expr
from gateway.mapping.values import NUMBERS, is_id_field, to_str

Pairs = tuple[tuple[str, Expr], ...]


class Extraction:
    """`extract:` pairs as one function of the data: `fields = extraction(data)`."""

    __slots__ = ("_run", "exact", "pairs")

    def __init__(self, pairs: Iterable[tuple[str, Expr]], *, exact: bool = False) -> None:
        self.pairs: Pairs = tuple(pairs)
        self.exact = exact
        # generated at the first call: a mapping's routes cost memory only once used
        self._run: Callable[[Any], dict[str, Any]] | None = None

    def __call__(self, data: Any) -> dict[str, Any]:
        run = self._run
        if run is None:
            run = self._run = generate(self.pairs, self.exact)
        return run(data)

    def __repr__(self) -> str:
        return f"Extraction({[name for name, _ in self.pairs]!r}, exact={self.exact})"


def generate(pairs: Pairs, exact: bool) -> Callable[[Any], dict[str, Any]]:
    """The function computing `pairs` over its argument (see the module docstring)."""
    namespace: dict[str, Any] = {"NUMBERS": NUMBERS, "to_str": to_str}
    lines = ["def extract(data):", "    fields = {}"]
    known: dict[tuple[str, ...], str] = {(): "data"}  # path prefix -> its local variable

    def lookup(keys: tuple[str, ...]) -> str:
        """The variable holding `keys` looked up from data, emitting what is missing."""
        name = known.get(keys)
        if name is None:
            parent = lookup(keys[:-1])
            name = known[keys] = f"p{len(known)}"
            # a missing parent gives None without raising (None.get would, at a
            # microsecond per AttributeError; expr_closures.path_closure does the same)
            lines.extend(
                (
                    f"    if {parent} is None:",
                    f"        {name} = None",
                    "    else:",
                    "        try:",
                    f"            {name} = {parent}.get({keys[-1]!r})",
                    "        except AttributeError:",
                    f"            {name} = None",
                )
            )
        return name

    for index, (field, expr) in enumerate(pairs):
        keys = expr.path_keys()
        if keys is not None:
            value = lookup(keys)
        else:
            value = "value"
            namespace[f"search{index}"] = expr.search
            lines.append(f"    value = search{index}(data)")
        lines.append(f"    if {value} is not None:")
        if exact and is_id_field(field):
            lines.append(
                f"        fields[{field!r}] = to_str({value}) if isinstance({value}, NUMBERS)"
                f" and not isinstance({value}, bool) else {value}"
            )
        else:
            lines.append(f"        fields[{field!r}] = {value}")
    lines.append("    return fields")
    # the source holds literals made by repr() and names of ours only (module docstring)
    exec(compile("\n".join(lines), "<extract>", "exec"), namespace)  # noqa: S102
    run: Callable[[Any], dict[str, Any]] = namespace["extract"]
    return run
