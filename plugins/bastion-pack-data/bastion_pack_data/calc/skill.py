"""Safe arithmetic: the expression is parsed with ``ast`` and only numbers, operators and a
fixed set of math functions are evaluated. Nothing is ever passed to ``eval``."""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from typing import TypedDict

from bastion_sdk import SkillError

MAX_EXPRESSION_CHARS = 2000
MAX_NODES = 400
MAX_INT_BITS = 4096
"""Integer results (and operands of ``**``) larger than this many bits are refused."""
MAX_FACTORIAL = 1000

CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}


def _bounded_factorial(n: float) -> int:
    if not float(n).is_integer() or n < 0:
        raise SkillError(f"factorial() needs a non-negative whole number, got {n!r}")
    if n > MAX_FACTORIAL:
        raise SkillError(f"factorial({int(n)}) is too large; the limit is {MAX_FACTORIAL}")
    return math.factorial(int(n))


def _bounded_comb(n: float, k: float) -> int:
    if n > MAX_FACTORIAL:
        raise SkillError(f"comb({n!r}, ...) is too large; the limit for n is {MAX_FACTORIAL}")
    return math.comb(int(n), int(k))


def _bounded_perm(n: float, k: float) -> int:
    if n > MAX_FACTORIAL:
        raise SkillError(f"perm({n!r}, ...) is too large; the limit for n is {MAX_FACTORIAL}")
    return math.perm(int(n), int(k))


def _log(x: float, base: float | None = None) -> float:
    return math.log(x) if base is None else math.log(x, base)


FUNCTIONS: dict[str, Callable[..., float | int]] = {
    "sqrt": math.sqrt, "cbrt": math.cbrt, "exp": math.exp, "log": _log,
    "ln": math.log, "log10": math.log10, "log2": math.log2,
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "asin": math.asin, "acos": math.acos,
    "atan": math.atan, "atan2": math.atan2, "sinh": math.sinh, "cosh": math.cosh,
    "tanh": math.tanh, "asinh": math.asinh, "acosh": math.acosh, "atanh": math.atanh,
    "degrees": math.degrees, "radians": math.radians, "hypot": math.hypot,
    "floor": math.floor, "ceil": math.ceil, "trunc": math.trunc, "abs": abs, "round": round,
    "min": min, "max": max, "gcd": math.gcd, "lcm": math.lcm, "isqrt": math.isqrt,
    "factorial": _bounded_factorial, "comb": _bounded_comb, "perm": _bounded_perm,
}

_BINOPS: dict[type[ast.operator], str] = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//",
    ast.Mod: "%", ast.Pow: "**",
}
_REFUSED_OPS: dict[type[ast.operator], str] = {
    ast.BitXor: "'^' is bitwise XOR here; write powers as '**', e.g. '2 ** 10'",
    ast.BitAnd: "'&' is not supported", ast.BitOr: "'|' is not supported",
    ast.LShift: "'<<' is not supported", ast.RShift: "'>>' is not supported",
    ast.MatMult: "'@' is not supported",
}


def _check_int(value: float | int) -> float | int:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise SkillError(f"the result has more than {MAX_INT_BITS} bits; use smaller numbers")
    return value


def _power(base: float | int, exp: float | int) -> float | int:
    if isinstance(base, int) and isinstance(exp, int) and exp > 0 and abs(base) > 1:
        if exp * math.log2(abs(base)) > MAX_INT_BITS:
            raise SkillError(
                f"{base} ** {exp} is too large (more than {MAX_INT_BITS} bits); "
                "use smaller numbers or a float base such as 2.0"
            )
    return _check_int(base**exp)


def _binop(op: ast.operator, left: float | int, right: float | int) -> float | int:
    kind = type(op)
    if kind is ast.Add:
        return _check_int(left + right)
    if kind is ast.Sub:
        return _check_int(left - right)
    if kind is ast.Mult:
        if isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:
                raise SkillError(f"the result has more than {MAX_INT_BITS} bits")
        return _check_int(left * right)
    if kind is ast.Div:
        return left / right
    if kind is ast.FloorDiv:
        return left // right
    if kind is ast.Mod:
        return left % right
    return _power(left, right)


class _Evaluator:
    def __init__(self) -> None:
        self.nodes = 0

    def eval(self, node: ast.AST) -> float | int:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise SkillError(f"the expression is too long (more than {MAX_NODES} parts)")
        if isinstance(node, ast.Expression):
            return self.eval(node.body)
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SkillError(f"only numbers are allowed, not {value!r}")
            return _check_int(value)
        if isinstance(node, ast.BinOp):
            if type(node.op) in _REFUSED_OPS:
                raise SkillError(_REFUSED_OPS[type(node.op)])
            if type(node.op) not in _BINOPS:
                raise SkillError(f"operator {type(node.op).__name__} is not supported")
            return _binop(node.op, self.eval(node.left), self.eval(node.right))
        if isinstance(node, ast.UnaryOp):
            operand = self.eval(node.operand)
            if isinstance(node.op, ast.USub):
                return -operand
            if isinstance(node.op, ast.UAdd):
                return +operand
            raise SkillError("only unary '+' and '-' are supported")
        if isinstance(node, ast.Name):
            if node.id in CONSTANTS:
                return CONSTANTS[node.id]
            if node.id in FUNCTIONS:
                raise SkillError(f"{node.id!r} is a function; call it, e.g. {node.id}(2)")
            raise SkillError(
                f"unknown name {node.id!r}; constants are {', '.join(sorted(CONSTANTS))}"
            )
        if isinstance(node, ast.Call):
            return self._call(node)
        raise SkillError(
            f"{type(node).__name__} is not allowed; use numbers, + - * / // % **, "
            "parentheses and math functions"
        )

    def _call(self, node: ast.Call) -> float | int:
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            name = node.func.id if isinstance(node.func, ast.Name) else "this call"
            raise SkillError(
                f"function {name!r} is not available; available: {', '.join(sorted(FUNCTIONS))}"
            )
        if node.keywords:
            raise SkillError(f"{node.func.id}() takes positional arguments only")
        if len(node.args) > 20:
            raise SkillError(f"{node.func.id}() takes at most 20 arguments")
        args = [self.eval(a) for a in node.args]
        if node.func.id in ("gcd", "lcm", "isqrt"):
            if not all(isinstance(a, int) for a in args):
                raise SkillError(f"{node.func.id}() needs whole numbers")
        try:
            return _check_int(FUNCTIONS[node.func.id](*args))
        except TypeError:
            raise SkillError(f"wrong number of arguments for {node.func.id}()") from None


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
        raise SkillError(f"precision must be between 1 and 17, got {precision}")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise SkillError(
            f"the expression is {len(expression)} characters; the limit is {MAX_EXPRESSION_CHARS}"
        )
    text = expression.strip()
    if not text:
        raise SkillError("the expression is empty; write e.g. '1 + 2'")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise SkillError(
            f"cannot parse {text[:80]!r}: {exc.msg} at column {exc.offset or 0}"
        ) from None
    except (RecursionError, MemoryError, ValueError):
        raise SkillError("the expression is nested too deeply") from None
    try:
        value = _Evaluator().eval(tree)
    except ZeroDivisionError:
        raise SkillError(f"division by zero in {text[:80]!r}") from None
    except OverflowError:
        raise SkillError(f"the result of {text[:80]!r} is too large") from None
    except (ValueError, ArithmeticError) as exc:
        raise SkillError(f"math error in {text[:80]!r}: {exc}") from None
    except RecursionError:
        raise SkillError("the expression is nested too deeply") from None
    if isinstance(value, complex):
        raise SkillError(f"{text[:80]!r} has a complex result; only real numbers are supported")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SkillError(f"the result of {text[:80]!r} is not a finite number")
        value = _round_significant(value, precision)
    return {"expression": text, "result": value}
