"""Safe arithmetic: the expression is parsed into Python's abstract syntax tree and only
numbers, operators and a fixed set of math functions are evaluated. Nothing reaches ``eval``.

The sandbox does not offer the ``ast`` module, so the tree comes from the built-in ``compile``
with the ``PyCF_ONLY_AST`` flag, and nodes are told apart by their class names."""

import math
from collections.abc import Callable
from typing import Any, TypedDict

PYCF_ONLY_AST = 0x400
"""``ast.PyCF_ONLY_AST``: ``compile`` returns the syntax tree instead of code."""
MAX_EXPRESSION_CHARS = 2000
MAX_NODES = 400
MAX_INT_BITS = 4096
"""Integer results (and operands of ``**``) larger than this many bits are refused."""
MAX_FACTORIAL = 1000
MAX_NESTING = 40
"""Parentheses nested deeper, or longer runs of signs or powers, are refused before parsing:
the parser recurses on them and the sandbox's stack is small."""


class CalcError(ValueError):
    """A problem with the expression that the caller can fix (reported as SKILL_ERROR)."""


CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}


def _bounded_factorial(n: float) -> int:
    if not float(n).is_integer() or n < 0:
        raise CalcError(f"factorial() needs a non-negative whole number, got {n!r}")
    if n > MAX_FACTORIAL:
        raise CalcError(f"factorial({int(n)}) is too large; the limit is {MAX_FACTORIAL}")
    return math.factorial(int(n))


def _bounded_comb(n: float, k: float) -> int:
    if n > MAX_FACTORIAL:
        raise CalcError(f"comb({n!r}, ...) is too large; the limit for n is {MAX_FACTORIAL}")
    return math.comb(int(n), int(k))


def _bounded_perm(n: float, k: float) -> int:
    if n > MAX_FACTORIAL:
        raise CalcError(f"perm({n!r}, ...) is too large; the limit for n is {MAX_FACTORIAL}")
    return math.perm(int(n), int(k))


def _log(x: float, base: float | None = None) -> float:
    return math.log(x) if base is None else math.log(x, base)


FUNCTIONS: dict[str, Callable[..., float | int]] = {
    "sqrt": math.sqrt,
    "cbrt": math.cbrt,
    "exp": math.exp,
    "log": _log,
    "ln": math.log,
    "log10": math.log10,
    "log2": math.log2,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "atan2": math.atan2,
    "sinh": math.sinh,
    "cosh": math.cosh,
    "tanh": math.tanh,
    "asinh": math.asinh,
    "acosh": math.acosh,
    "atanh": math.atanh,
    "degrees": math.degrees,
    "radians": math.radians,
    "hypot": math.hypot,
    "floor": math.floor,
    "ceil": math.ceil,
    "trunc": math.trunc,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "gcd": math.gcd,
    "lcm": math.lcm,
    "isqrt": math.isqrt,
    "factorial": _bounded_factorial,
    "comb": _bounded_comb,
    "perm": _bounded_perm,
}

_BINOPS = frozenset({"Add", "Sub", "Mult", "Div", "FloorDiv", "Mod", "Pow"})
_REFUSED_OPS: dict[str, str] = {
    "BitXor": "'^' is bitwise XOR here; write powers as '**', e.g. '2 ** 10'",
    "BitAnd": "'&' is not supported",
    "BitOr": "'|' is not supported",
    "LShift": "'<<' is not supported",
    "RShift": "'>>' is not supported",
    "MatMult": "'@' is not supported",
}


def _check_int(value: float | int) -> float | int:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise CalcError(f"the result has more than {MAX_INT_BITS} bits; use smaller numbers")
    return value


def _power(base: float | int, exp: float | int) -> float | int:
    if (
        isinstance(base, int)
        and isinstance(exp, int)
        and exp > 0
        and abs(base) > 1
        and exp * math.log2(abs(base)) > MAX_INT_BITS
    ):
        raise CalcError(
            f"{base} ** {exp} is too large (more than {MAX_INT_BITS} bits); "
            "use smaller numbers or a float base such as 2.0"
        )
    return _check_int(base**exp)


def _binop(kind: str, left: float | int, right: float | int) -> float | int:
    if kind == "Add":
        return _check_int(left + right)
    if kind == "Sub":
        return _check_int(left - right)
    if kind == "Mult":
        if (
            isinstance(left, int)
            and isinstance(right, int)
            and left.bit_length() + right.bit_length() > MAX_INT_BITS + 1
        ):
            raise CalcError(f"the result has more than {MAX_INT_BITS} bits")
        return _check_int(left * right)
    if kind == "Div":
        return left / right
    if kind == "FloorDiv":
        return left // right
    if kind == "Mod":
        return left % right
    return _power(left, right)


class _Evaluator:
    def __init__(self) -> None:
        self.nodes = 0

    def eval(self, node: Any) -> float | int:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise CalcError(f"the expression is too long (more than {MAX_NODES} parts)")
        kind = type(node).__name__
        if kind == "Expression":
            return self.eval(node.body)
        if kind == "Constant":
            value = node.value
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise CalcError(f"only numbers are allowed, not {value!r}")
            return _check_int(value)
        if kind == "BinOp":
            op = type(node.op).__name__
            if op in _REFUSED_OPS:
                raise CalcError(_REFUSED_OPS[op])
            if op not in _BINOPS:
                raise CalcError(f"operator {op} is not supported")
            return _binop(op, self.eval(node.left), self.eval(node.right))
        if kind == "UnaryOp":
            operand = self.eval(node.operand)
            op = type(node.op).__name__
            if op == "USub":
                return -operand
            if op == "UAdd":
                return +operand
            raise CalcError("only unary '+' and '-' are supported")
        if kind == "Name":
            if node.id in CONSTANTS:
                return CONSTANTS[node.id]
            if node.id in FUNCTIONS:
                raise CalcError(f"{node.id!r} is a function; call it, e.g. {node.id}(2)")
            raise CalcError(
                f"unknown name {node.id!r}; constants are {', '.join(sorted(CONSTANTS))}"
            )
        if kind == "Call":
            return self._call(node)
        raise CalcError(
            f"{kind} is not allowed; use numbers, + - * / // % **, parentheses and math functions"
        )

    def _call(self, node: Any) -> float | int:
        func = node.func
        if type(func).__name__ != "Name":
            raise CalcError(
                f"calling {type(func).__name__} is not allowed; call a math function by "
                "name, e.g. sqrt(2)"
            )
        if func.id not in FUNCTIONS:
            name = func.id
            raise CalcError(
                f"function {name!r} is not available; available: {', '.join(sorted(FUNCTIONS))}"
            )
        if node.keywords:
            raise CalcError(f"{node.func.id}() takes positional arguments only")
        if len(node.args) > 20:
            raise CalcError(f"{node.func.id}() takes at most 20 arguments")
        args = [self.eval(a) for a in node.args]
        if node.func.id in ("gcd", "lcm", "isqrt") and not all(isinstance(a, int) for a in args):
            raise CalcError(f"{node.func.id}() needs whole numbers")
        try:
            return _check_int(FUNCTIONS[node.func.id](*args))
        except TypeError:
            raise CalcError(f"wrong number of arguments for {node.func.id}()") from None


def _check_nesting(text: str) -> None:
    depth = deepest = signs = 0
    for ch in text:
        if ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")":
            depth -= 1
        if ch in "+-":
            signs += 1
            if signs > MAX_NESTING:
                raise CalcError(f"more than {MAX_NESTING} signs in a row; simplify the expression")
        elif not ch.isspace():
            signs = 0
    if deepest > MAX_NESTING:
        raise CalcError(
            f"parentheses are nested more than {MAX_NESTING} deep; simplify the expression"
        )
    if text.count("**") > MAX_NESTING:
        raise CalcError(f"more than {MAX_NESTING} powers (**); simplify the expression")


def _round_significant(value: float, digits: int) -> float:
    if value == 0 or not math.isfinite(value):
        return value
    return float(f"{value:.{digits}g}")


class CalcResult(TypedDict):
    expression: str
    result: float


def run(expression: str, precision: int = 12) -> CalcResult:
    """Evaluate an arithmetic expression safely and return its value.

    Supports numbers, + - * / // % ** and parentheses, the constants pi, e and tau, and math
    functions such as sqrt, log, sin, cos, floor, factorial, min and max. Anything else
    (names, attributes, strings, imports) is refused with an error.

    Args:
        expression: The expression, e.g. "2 * (3 + 4) ** 2" or "sqrt(2) / 2".
        precision: Significant digits kept in a non-integer result (1 to 17).
    """
    if not 1 <= precision <= 17:
        raise CalcError(f"precision must be between 1 and 17, got {precision}")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalcError(
            f"the expression is {len(expression)} characters; the limit is {MAX_EXPRESSION_CHARS}"
        )
    text = expression.strip()
    if not text:
        raise CalcError("the expression is empty; write e.g. '1 + 2'")
    _check_nesting(text)
    try:
        tree = compile(text, "<expression>", "eval", PYCF_ONLY_AST, dont_inherit=True)
    except SyntaxError as exc:
        raise CalcError(
            f"cannot parse {text[:80]!r}: {exc.msg} at column {exc.offset or 0}"
        ) from None
    except (RecursionError, MemoryError, ValueError):
        raise CalcError("the expression is nested too deeply") from None
    try:
        value = _Evaluator().eval(tree)
    except CalcError:
        raise
    except ZeroDivisionError:
        raise CalcError(f"division by zero in {text[:80]!r}") from None
    except OverflowError:
        raise CalcError(f"the result of {text[:80]!r} is too large") from None
    except (ValueError, ArithmeticError) as exc:
        raise CalcError(f"math error in {text[:80]!r}: {exc}") from None
    except RecursionError:
        raise CalcError("the expression is nested too deeply") from None
    if isinstance(value, complex):
        raise CalcError(f"{text[:80]!r} has a complex result; only real numbers are supported")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CalcError(f"the result of {text[:80]!r} is not a finite number")
        value = _round_significant(value, precision)
    return {"expression": text, "result": value}
