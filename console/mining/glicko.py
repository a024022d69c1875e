"""Duel ratings as the subnet's validators compute them (Glicko-2, one game per duel).

Source: three-gen-subnet `neurons/validator/duels/ratings.py` at 5fc61f1: a new miner starts at
rating 1500, RD 350, volatility 0.5; a duel updates both sides from their pre-duel values with the
`glicko2` package (2.1.0, system constant tau 0.5): win 1.0, loss 0.0, draw 0.5; then rating is
clamped to [0, 3000], RD to [30, 350], volatility to [0.03, 0.2]. The reward multiplies accepted
results in 4 hours by this rating (`miner_data.calculate_reward`).

One quirk is kept on purpose: the package's volatility iteration uses the player's scaled rating
squared where Glickman's paper has the rating deviation squared (glicko2.py `_f`). Validators run
the package, so the rehearsal does too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCALE = 173.7178  # Glicko-2's rating scale factor
TAU = 0.5  # the glicko2 package's system constant
EPSILON = 1e-6  # convergence of the volatility iteration

MIN_RATING, MAX_RATING = 0.0, 3000.0
MIN_RD, MAX_RD = 30.0, 350.0
MIN_VOL, MAX_VOL = 0.03, 0.2

WIN, LOSS, DRAW = 1.0, 0.0, 0.5


@dataclass(frozen=True)
class Glicko:
    rating: float = 1500.0
    rd: float = 350.0
    vol: float = 0.5  # the validator's starting volatility (above the clamp: the first duel lowers it)


def _g(phi: float) -> float:
    return 1.0 / math.sqrt(1.0 + 3.0 * phi * phi / (math.pi * math.pi))


def _expected(mu: float, mu_j: float, phi_j: float) -> float:
    return 1.0 / (1.0 + math.exp(-_g(phi_j) * (mu - mu_j)))


def _new_volatility(mu: float, phi: float, sigma: float, delta: float, v: float) -> float:
    a = math.log(sigma * sigma)

    def f(x: float) -> float:
        ex = math.exp(x)
        # mu * mu here (not phi * phi): the package's formula, see the module docstring
        return ex * (delta * delta - mu * mu - v - ex) / (2.0 * (mu * mu + v + ex) ** 2) - (x - a) / TAU**2

    big_a = a
    if delta * delta > phi * phi + v:
        big_b = math.log(delta * delta - phi * phi - v)
    else:
        k = 1
        while f(a - k * TAU) < 0:
            k += 1
        big_b = a - k * TAU
    f_a, f_b = f(big_a), f(big_b)
    while abs(big_b - big_a) > EPSILON:  # Illinois variant of regula falsi
        c = big_a + (big_a - big_b) * f_a / (f_b - f_a)
        f_c = f(c)
        if f_c * f_b <= 0:
            big_a, f_a = big_b, f_b
        else:
            f_a /= 2.0
        big_b, f_b = c, f_c
    return math.exp(big_a / 2.0)


def update(player: Glicko, opponent: Glicko, score: float) -> Glicko:
    """One rating period with one game against `opponent` (unclamped, as the package returns it)."""
    mu, phi = (player.rating - 1500.0) / SCALE, player.rd / SCALE
    mu_j, phi_j = (opponent.rating - 1500.0) / SCALE, opponent.rd / SCALE
    g, e = _g(phi_j), _expected(mu, mu_j, phi_j)
    v = 1.0 / (g * g * e * (1.0 - e))
    delta = v * g * (score - e)
    sigma = _new_volatility(mu, phi, player.vol, delta, v)
    phi_star = math.sqrt(phi * phi + sigma * sigma)
    phi_new = 1.0 / math.sqrt(1.0 / (phi_star * phi_star) + 1.0 / v)
    mu_new = mu + phi_new * phi_new * g * (score - e)
    return Glicko(mu_new * SCALE + 1500.0, phi_new * SCALE, sigma)


def _clamp(r: Glicko) -> Glicko:
    return Glicko(
        min(MAX_RATING, max(MIN_RATING, r.rating)),
        min(MAX_RD, max(MIN_RD, r.rd)),
        min(MAX_VOL, max(MIN_VOL, r.vol)),
    )


def duel(left: Glicko, right: Glicko, left_score: float) -> tuple[Glicko, Glicko]:
    """Both sides after a duel (`left_score` WIN, LOSS or DRAW), each from the other's pre-duel values."""
    return _clamp(update(left, right, left_score)), _clamp(update(right, left, 1.0 - left_score))
