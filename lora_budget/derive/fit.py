"""From measured bytes at a few (b, s) points to the planner's per-token coefficients.

Every quantity a truncated step measures has the form ``C + a s + T (lin + quad s)`` for T = b s
tokens: fixed bytes (C: a dequantized weight, scalars), bytes per position shared by the batch
(a s: rotary cos/sin of shape (1, s, d), position ids), bytes per token (lin) and per token per
position (quad: s x s attention scores). Four points on a 2 x 2 grid of b and s determine the four
numbers exactly (solved in rationals); a fifth point at a third sequence length checks them, and
its residual is stored with the record. The per-position term is folded into ``lin`` (exact at
b = 1, a little high above), the convention of the analytical walk's rotary term.

Sizes are exact only where every tensor is a whole number of 512-byte allocator blocks, so the
points use T a multiple of 512 tokens.
"""

from __future__ import annotations

from fractions import Fraction

Point = tuple[int, int]


def points(max_positions: int) -> tuple[tuple[Point, ...], Point]:
    """(the four fitting points, the check point), sequence lengths within the model's positions."""
    unit = min(256, max(8, (max_positions // 3) // 8 * 8))
    fit = ((2, unit), (4, unit), (2, 2 * unit), (4, 2 * unit))
    return fit, (2, 3 * unit)


def _solve(rows: list[list[Fraction]], rhs: list[Fraction]) -> list[Fraction]:
    n = len(rows)
    a = [row[:] + [r] for row, r in zip(rows, rhs, strict=True)]
    for col in range(n):
        pivot = next(i for i in range(col, n) if a[i][col] != 0)
        a[col], a[pivot] = a[pivot], a[col]
        for i in range(n):
            if i != col and a[i][col] != 0:
                f = a[i][col] / a[col][col]
                a[i] = [x - f * y for x, y in zip(a[i], a[col], strict=True)]
    return [a[i][n] / a[i][i] for i in range(n)]


def _row(b: int, s: int) -> list[Fraction]:
    return [Fraction(1), Fraction(s), Fraction(b * s), Fraction(b * s * s)]


def fit(at: list[Point], values: list[int]) -> tuple[float, float, float, float]:
    """(C, a, lin, quad) through the first four points."""
    c, a, lin, quad = _solve([_row(b, s) for b, s in at[:4]], [Fraction(v) for v in values[:4]])
    return float(c), float(a), float(lin), float(quad)


def evaluate(coeffs: tuple[float, float, float, float], b: int, s: int) -> float:
    c, a, lin, quad = coeffs
    return c + a * s + b * s * (lin + quad * s)


def per_token(coeffs: tuple[float, float, float, float]) -> list[float]:
    """``[lin, quad]`` with the per-position term folded into lin."""
    _, a, lin, quad = coeffs
    return [lin + a, quad]
