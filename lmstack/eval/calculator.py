"""A calculator tool for agents: evaluates arithmetic from model output without `eval`.

The expression is parsed with Python's `ast` and only numbers, parentheses, unary +/- and the binary operators
+ - * / // % ** are evaluated; anything else (names, calls, attributes, strings) is an error string the agent
sees as its observation. Powers are bounded (|exponent| <= 64, |base| <= 1e6) so "9**9**9" cannot hang the loop.
Results print as integers when integral ("12", not "12.0"), else with up to 10 significant digits.
"""

from __future__ import annotations

import ast
import operator

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}  # fmt: skip
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        a, b = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and (abs(b) > 64 or abs(a) > 1e6):
            raise ValueError("power too large")
        return _BINARY[type(node.op)](a, b)
    raise ValueError(f"unsupported syntax: {type(node).__name__}")


def calculate(expression: str) -> str:
    """'(3 + 4) * 2' -> '14'; errors come back as 'error: ...' (an observation, never an exception)."""
    expr = expression.strip().replace("^", "**").replace("×", "*").replace("÷", "/").rstrip("=").strip()
    expr = expr.replace(",", "")  # "1,000" -> "1000"
    try:
        value = _eval(ast.parse(expr, mode="eval"))
    except ZeroDivisionError:
        return "error: division by zero"
    except (SyntaxError, ValueError, TypeError, OverflowError, RecursionError) as e:
        return f"error: {e}"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    return str(value) if isinstance(value, int) else f"{value:.10g}"
