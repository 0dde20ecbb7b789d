"""Maximum-likelihood refinement on the coded snapshots, and the model order from the likelihood.

Model (the simulator's and the CRB's, crb.py): y_l ~ CN(0, S_l), S_l = G_l A P A^H G_l^H + s2 I_M,
G_l = H diag(c_l), P = diag(p). The log-likelihood, up to a constant,
    l(xi) = -sum_l [log det S_l + y_l^H S_l^-1 y_l]
has the score and Fisher information (Kay, Fundamentals of SSP I, 15.7; the dS/dxi of crb.py)
    g_i  = sum_l [y_l^H S_l^-1 dS_i S_l^-1 y_l - tr(S_l^-1 dS_i)]
    J_ij = sum_l tr(S_l^-1 dS_i S_l^-1 dS_j).
Fisher scoring with Levenberg-Marquardt damping, xi <- clip(xi + (J + lam diag J)^-1 g) to the
box, kept only where l rises (then lam / 3, else lam * 5). Unknowns per source: the position
(azimuth, elevation, rho = 1/r: the near-field curvature is linear in rho) and log p_k; per
scene log s2 (logs keep powers positive and make their steps relative).

Every dS_i is a sum of rank-one terms c u w^H with u, w among V_l = [G_l a_k, G_l da_k/dxi_kp]
(position kp: p_k (e_kp b_k^H + b_k e_kp^H); power k: p_k b_k b_k^H), plus s2 I for the noise.
With Gamma_l = V_l^H S_l^-1 V_l every trace is a product of its entries,
    tr(S^-1 u1 w1^H S^-1 u2 w2^H) = (w1^H S^-1 u2)(w2^H S^-1 u1),
so an iteration costs O(L M^2 K) per scene instead of O(L M^2 D^2). Batched over scenes, any device.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lightning_modules.ris.crb import per_source_jacobian

Steer = Callable[[torch.Tensor], torch.Tensor]  # (S, P) real positions -> (S, N) complex steering vectors


@dataclass
class Fit:
    """ML estimates per scene: positions (B, K, P) in the refiner's parameters, powers (B, K)
    (0 on unused slots), noise power (B,), log-likelihood (B,) and the count fitted (B,)."""

    positions: torch.Tensor
    powers: torch.Tensor
    noise: torch.Tensor
    loglik: torch.Tensor
    count: torch.Tensor


class LikelihoodRefiner:
    """ML fits of K sources in L coded snapshots. `steer` maps positions to steering vectors;
    `lower`/`upper` (P,) bound the positions."""

    def __init__(self, steer: Steer, lower: torch.Tensor, upper: torch.Tensor, iterations: int = 30,
                 power_steps: int = 3, max_step: torch.Tensor | None = None, chunk: int = 4096):
        self.steer, self.iterations, self.power_steps, self.chunk = steer, iterations, power_steps, chunk
        self.lower, self.upper = lower.double(), upper.double()
        # largest step per position parameter (default: a tenth of the box); log powers: 2
        self.max_step = max_step.double() if max_step is not None else (self.upper - self.lower) / 10

    # ---- model pieces ----
    def project(self, channel, codes, positions, with_derivatives: bool):
        """b = G_l a_k (B, L, K, M) and, if asked, e = G_l da_k/dxi_kp (B, L, K, P, M)."""
        batch, count, per = positions.shape
        flat = positions.reshape(-1, per)
        a = self.steer(flat).reshape(batch, count, -1)
        b = torch.einsum("bln,bkn,bmn->blkm", codes, a, channel)
        if not with_derivatives:
            return b, None
        d = per_source_jacobian(self.steer, flat).reshape(batch, count, -1, per)  # (B, K, N, P)
        e = torch.einsum("bln,bknp,bmn->blkpm", codes, d, channel)
        return b, e

    @staticmethod
    def covariance(b, powers, noise):
        """S_l (B, L, M, M)."""
        eye = torch.eye(b.shape[-1], dtype=b.dtype, device=b.device)
        return torch.einsum("blkm,bk,blkn->blmn", b, powers.to(b.dtype), b.conj()) + noise[:, None, None, None] * eye

    @staticmethod
    def cholesky(cov):
        """Cholesky factors (B, L, M, M) and whether every S_l of a scene was positive definite (B,);
        a failed one is replaced by I (that scene's value is then discarded)."""
        chol, info = torch.linalg.cholesky_ex(cov)
        ok = (info == 0).all(-1)
        eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
        return torch.where((info == 0)[..., None, None], chol, eye), ok

    def loglik(self, y, channel, codes, positions, powers, noise):
        """l (B,); -inf where some S_l is not positive definite."""
        b, _ = self.project(channel, codes, positions, with_derivatives=False)
        chol, ok = self.cholesky(self.covariance(b, powers, noise))
        white = torch.linalg.solve_triangular(chol, y.unsqueeze(-1), upper=False).squeeze(-1)
        logdet = 2 * torch.log(chol.diagonal(dim1=-2, dim2=-1).real).sum(-1)
        value = -(logdet + (white.abs() ** 2).sum(-1)).sum(-1)
        return torch.where(ok, value, -torch.inf)

    def score_and_fisher(self, y, channel, codes, positions, powers, noise):
        """Log-likelihood (B,), score (B, D) and Fisher information (B, D, D) with respect to
        xi = (positions k-major, log powers, log noise), D = K (P + 1) + 1."""
        batch, count, per = positions.shape
        b, e = self.project(channel, codes, positions, with_derivatives=True)
        cov = self.covariance(b, powers, noise)
        chol, _ = self.cholesky(cov)  # accepted points are positive definite
        inverse = torch.cholesky_inverse(chol)  # S_l^-1
        logdet = 2 * torch.log(chol.diagonal(dim1=-2, dim2=-1).real).sum(-1)
        # columns of V: b_k (k), then e_kp (count + k * per + p)
        v = torch.cat([b, e.flatten(2, 3)], dim=2).transpose(-1, -2)  # (B, L, M, C)
        sv, sy = inverse @ v, (inverse @ y.unsqueeze(-1)).squeeze(-1)
        gamma = v.mH @ sv  # (B, L, C, C): w^H S^-1 u at [w, u]
        gamma2 = sv.mH @ sv  # w^H S^-2 u
        t = (sv.mH @ y.unsqueeze(-1)).squeeze(-1)  # w^H S^-1 y
        loglik = -(logdet + (y.conj() * sy).sum(-1).real).sum(-1)
        # rank-one terms (u, w, parameter, source) of every dS_i except the noise's
        us, ws, params, sources = [], [], [], []
        for k in range(count):
            for p in range(per):
                column = count + k * per + p
                us += [column, k]
                ws += [k, column]
                params += [k * per + p] * 2
                sources += [k, k]
            us.append(k)
            ws.append(k)
            params.append(count * per + k)
            sources.append(k)
        device = y.device
        us, ws, sources = (torch.tensor(x, device=device) for x in (us, ws, sources))
        coef = powers[:, sources].to(gamma.dtype)  # (B, T)
        size = count * (per + 1) + 1
        assign = torch.zeros(size, len(params), dtype=gamma.real.dtype, device=device)
        assign[params, torch.arange(len(params))] = 1.0
        cross = gamma[:, :, ws][:, :, :, us]  # A[r, s] = w_r^H S^-1 u_s
        terms = (cross * cross.transpose(-1, -2)).sum(1)  # sum_l A[r, s] A[s, r]
        terms = coef[:, :, None] * terms * coef[:, None, :]
        fisher = torch.zeros(batch, size, size, dtype=assign.dtype, device=device)
        fisher[:, :-1, :-1] = (assign[:-1] @ terms.real @ assign[:-1].T)
        diag_u_w = gamma2[:, :, ws, us].sum(1)  # sum_l w_r^H S^-2 u_r
        noise_cross = (assign[:-1] @ (coef * diag_u_w).real.unsqueeze(-1)).squeeze(-1) * noise[:, None]
        fisher[:, :-1, -1] = fisher[:, -1, :-1] = noise_cross
        fisher[:, -1, -1] = noise**2 * (inverse.abs() ** 2).sum((-3, -2, -1))
        per_term = (t[:, :, us].conj() * t[:, :, ws] - gamma[:, :, ws, us]).sum(1)  # (B, T)
        score = torch.zeros(batch, size, dtype=assign.dtype, device=device)
        score[:, :-1] = (assign[:-1] @ (coef * per_term).real.unsqueeze(-1)).squeeze(-1)
        trace = inverse.diagonal(dim1=-2, dim2=-1).real.sum(-1)
        score[:, -1] = noise * ((sy.abs() ** 2).sum(-1) - trace).sum(-1)
        return loglik, score, fisher

    # ---- fitting ----
    @staticmethod
    def start_powers(b, y, active, floor):
        """A start for p and s2 at given positions: s2 from the energy of y_l outside span(G_l A)
        (per free dimension), then p by least squares on sum_l |y_l y_l^H - s2 I - sum_k p_k b_lk b_lk^H|_F^2."""
        basis = b.transpose(-1, -2) * active[:, None, None, :]  # (B, L, M, K), unused slots zero
        q, _ = torch.linalg.qr(basis)
        q = q * active[:, None, None, :]
        residual = y - (q @ (q.mH @ y.unsqueeze(-1))).squeeze(-1)
        free = (b.shape[-1] - active.sum(-1)).clamp_min(1) * b.shape[1]
        scale = (y.abs() ** 2).mean((1, 2))
        noise = ((residual.abs() ** 2).sum((1, 2)) / free).clamp_min(floor * scale)
        gram = ((b.conj() @ b.transpose(-1, -2)).abs() ** 2).sum(1)  # sum_l |b_k^H b_j|^2 (B, K, K)
        rhs = (((b.conj() * y[:, :, None]).sum(-1).abs() ** 2) - noise[:, None, None] * (b.abs() ** 2).sum(-1)).sum(1)
        outer = active[:, :, None] & active[:, None, :]
        eye = torch.eye(b.shape[2], dtype=gram.dtype, device=b.device)
        gram = torch.where(outer, gram, eye)
        ridge = 1e-6 * gram.diagonal(dim1=-2, dim2=-1).mean(-1)[:, None, None] * eye  # two starts at one point
        powers = torch.linalg.solve(gram + ridge, torch.where(active, rhs, 0.0))
        return torch.where(active, powers.clamp_min(0.05 * scale[:, None]), 0.0), noise

    def fit(self, y, channel, codes, start, count, iterations: int | None = None, floor: float = 1e-9) -> Fit:
        """Refine `count` sources per scene from `start` (B, K, P); slots >= count are ignored."""
        parts = []
        step = max(1, self.chunk // max(1, y.shape[1]))
        for s in range(0, len(y), step):
            parts.append(self._fit(*(x[s:s + step] for x in (y, channel, codes, start, count)), floor,
                                   self.iterations if iterations is None else iterations))
        return Fit(*(torch.cat([getattr(p, f) for p in parts]) for f in ("positions", "powers", "noise", "loglik", "count")))

    def _fit(self, y, channel, codes, start, count, floor, iterations) -> Fit:
        y, channel, codes = (x.to(torch.complex128) for x in (y, channel, codes))
        batch, width, per = start.shape
        lower, upper = self.lower.to(y.device), self.upper.to(y.device)
        active = torch.arange(width, device=y.device)[None, :] < count[:, None]
        positions = torch.minimum(torch.maximum(start.double(), lower), upper)
        b, _ = self.project(channel, codes, positions, with_derivatives=False)
        powers, noise = self.start_powers(b, y, active, floor)
        scale = (y.abs() ** 2).mean((1, 2))
        xi = torch.cat([positions.flatten(1), torch.log(powers.clamp_min(1e-300)), torch.log(noise)[:, None]], -1)
        size = xi.shape[1]
        lo = torch.cat([lower.repeat(width), torch.full((width,), -math.inf, dtype=xi.dtype, device=y.device)])
        hi = torch.cat([upper.repeat(width), torch.full((width,), math.inf, dtype=xi.dtype, device=y.device)])
        lo = torch.cat([lo[None].expand(batch, -1), torch.log(floor * scale)[:, None]], -1)
        lo[:, width * per:-1] = torch.log(1e-4 * scale)[:, None]
        hi = torch.cat([hi[None].expand(batch, -1), torch.full((batch, 1), math.inf, dtype=xi.dtype, device=y.device)], -1)
        position_free = active.repeat_interleave(per, dim=1)
        damping = torch.full((batch,), 1e-2, dtype=xi.dtype, device=y.device)
        eye = torch.eye(size, dtype=xi.dtype, device=y.device)
        cap = torch.cat([self.max_step.to(xi).repeat(width), torch.full((width + 1,), 2.0, dtype=xi.dtype, device=y.device)])

        def unpack(x):
            return (x[:, : width * per].reshape(batch, width, per), torch.where(active, x[:, width * per:-1].exp(), 0.0),
                    x[:, -1].exp())

        loglik = self.loglik(y, channel, codes, *unpack(xi))
        for iteration in range(iterations):
            free = torch.cat([position_free & (iteration >= self.power_steps), active, torch.ones_like(active[:, :1])], -1)
            _, score, fisher = self.score_and_fisher(y, channel, codes, *unpack(xi))
            both = free[:, :, None] & free[:, None, :]
            fisher = torch.where(both, fisher, eye)
            score = torch.where(free, score, 0.0)
            diag = fisher.diagonal(dim1=-2, dim2=-1)
            system = fisher + torch.diag_embed(damping[:, None] * diag + 1e-12 * diag.mean(-1, keepdim=True))
            delta = torch.linalg.solve(system, score.unsqueeze(-1)).squeeze(-1)
            delta = delta / (delta.abs() / cap).amax(-1, keepdim=True).clamp_min(1.0)  # trust region
            trial = torch.minimum(torch.maximum(xi + delta, lo), hi)
            trial_loglik = self.loglik(y, channel, codes, *unpack(trial))
            better = torch.isfinite(trial_loglik) & (trial_loglik > loglik)
            xi = torch.where(better[:, None], trial, xi)
            loglik = torch.where(better, trial_loglik, loglik)
            damping = torch.where(better, damping / 3, damping * 5).clamp(1e-8, 1e8)
        positions, powers, noise = unpack(xi)
        return Fit(positions, powers, noise, loglik, count)

    def added_source_gain(self, y, channel, codes, fit: Fit, b, taken, shortlist: int = 16):
        """For each pool position (its b = G_l a as (B, L, M, Q)): the rise of l from adding one
        source there to the current fit, with its power p >= 0 maximized and the rest held,
            dl(p) = sum_l [p z_l / (1 + p q_l) - log(1 + p q_l)],  q_l = b^H S_l^-1 b,  z_l = |b^H S_l^-1 y_l|^2.
        The `shortlist` positions with the largest score statistic (sum_l (z_l - q_l))_+^2 / sum_l q_l^2
        (the Rao test of p = 0) get dl at its maximum over p (Newton steps); the rest -inf, as do
        taken entries. Returns dl (B, Q)."""
        active = fit.powers > 0
        current, _ = self.project(channel, codes, fit.positions, with_derivatives=False)
        chol, _ = self.cholesky(self.covariance(current * active[:, None, :, None], fit.powers, fit.noise))
        sb = torch.cholesky_solve(b, chol.to(b.dtype))  # (B, L, M, Q): S_l^-1 b
        q = (b.conj() * sb).sum(-2).real.double()  # (B, L, Q)
        z = ((y.conj().unsqueeze(-1).to(b.dtype) * sb).sum(-2).abs() ** 2).double()
        rise = (z - q).sum(1)
        score = torch.where(taken | (rise <= 0), -torch.inf, rise**2 / (q**2).sum(1))
        keep = score.topk(min(shortlist, score.shape[1]), dim=1).indices  # (B, S)
        q, z = (x.gather(2, keep[:, None].expand(-1, x.shape[1], -1)) for x in (q, z))
        power = (rise.gather(1, keep) / (q**2).sum(1)).clamp_min(1e-6)
        for _ in range(12):
            denom = 1 + power[:, None] * q
            grad = (z / denom**2 - q / denom).sum(1)
            curv = (-2 * z * q / denom**3 + q**2 / denom**2).sum(1)
            power = torch.where(curv < 0, power - grad / curv, power * torch.where(grad > 0, 2.0, 0.5)).clamp_min(1e-6)
        denom = 1 + power[:, None] * q
        gain = (power[:, None] * z / denom - torch.log(denom)).sum(1)
        gain = torch.where(torch.isfinite(score.gather(1, keep)), gain, -torch.inf)
        return torch.full_like(score, -torch.inf).scatter(1, keep, gain)

    def greedy_fits(self, y, channel, codes, pool, k_max: int, iterations: int = 10) -> list[Fit]:
        """Forward selection: fits of 1..k_max sources, the k-th adding the pool position (B, Q, P)
        whose added source raises the likelihood most, then refining all k jointly."""
        y, channel, codes, pool = y.to(torch.complex128), channel.to(torch.complex128), codes.to(torch.complex128), pool.double()
        batch, depth, per = pool.shape
        lower, upper = self.lower.to(y.device), self.upper.to(y.device)
        pool = torch.minimum(torch.maximum(pool, lower), upper)
        positions = pool[:, :1].repeat(1, k_max, 1)
        empty = Fit(positions, torch.zeros(batch, k_max, dtype=torch.float64, device=y.device),
                    (y.abs() ** 2).mean((1, 2)), None, None)
        taken = torch.zeros(batch, depth, dtype=torch.bool, device=y.device)
        fits, current, rows = [], empty, torch.arange(batch, device=y.device)
        low = (channel.to(torch.complex64), codes.to(torch.complex64))  # candidates need no float64
        b = torch.cat([self.project(*low, pool[:, s:s + 256].float(), with_derivatives=False)[0]
                       for s in range(0, depth, 256)], 2).transpose(-1, -2)  # (B, L, M, Q)
        for k in range(k_max):
            gain = self.added_source_gain(y, channel, codes, current, b, taken)
            pick = gain.argmax(-1)
            taken = taken.clone()
            taken[rows, pick] = True
            positions = current.positions.clone()
            positions[:, k] = pool[rows, pick]
            count = torch.full((batch,), k + 1, dtype=torch.long, device=y.device)
            current = self.fit(y, channel, codes, positions, count, iterations)
            fits.append(current)
        return fits

    def choose(self, y, channel, codes, fits: list[Fit], count=None, penalty: float | None = None) -> Fit:
        """From greedy fits of 1..k sources: the fit with `count` sources per scene, or (penalty)
        the k minimizing the information criterion -2 l_k + penalty (k (P + 1) + 1) (BIC with
        penalty = log(L M): L M complex observations); then a full refinement of it."""
        loglik = torch.stack([f.loglik for f in fits], -1)  # (B, k)
        if count is None:
            per = fits[0].positions.shape[-1]
            sizes = torch.arange(1, len(fits) + 1, device=y.device) * (per + 1) + 1
            count = (-2 * loglik + penalty * sizes).argmin(-1) + 1
        rows = torch.arange(len(y), device=y.device)
        start = torch.stack([f.positions for f in fits], 1)[rows, count - 1]
        return self.fit(y, channel, codes, start, count)

def ris_refiner(geometry, box_lower: torch.Tensor, box_upper: torch.Tensor, settings) -> LikelihoodRefiner:
    """The refiner of the RIS model: positions (azimuth, elevation, rho = 1/r), the near-field
    steering of physics.py; `box_*` in the same parameters (MUSIC's search box)."""
    from datamodules.ris.physics import steering

    elements = geometry.element_positions()
    cached: dict = {}

    def steer(params):
        key = (params.device, params.dtype)
        if key not in cached:
            cached[key] = elements.to(params.device, params.dtype)
        return steering(cached[key], geometry.wavenumber, params[:, 0], params[:, 1], 1.0 / params[:, 2])

    return LikelihoodRefiner(steer, box_lower, box_upper, settings.iterations, settings.power_steps)


def likelihood_grid(grid, step_deg: float, inverse_range_points: int) -> torch.Tensor:
    """(G, 3) coarse (azimuth, elevation, range m) points over MUSIC's box, added to the pool."""
    import dataclasses

    coarse = dataclasses.replace(grid, azimuth_step_deg=step_deg, elevation_step_deg=step_deg,
                                 inverse_range_points=inverse_range_points)
    points = torch.stack(torch.meshgrid(*coarse.axes(), indexing="ij"), -1).reshape(-1, 3)
    return torch.cat([points[:, :2], 1.0 / points[:, 2:]], -1).float()


def refine_scenes(refiner: LikelihoodRefiner, y, channel, codes, pool, k_max: int, counts: dict) -> dict:
    """ML estimates (B, k_max, 3) as (azimuth, elevation, range m) from a pool of starting
    positions (B, Q, 3) in the same form, one greedy pass shared by every way of choosing K:
    `counts` maps a name to a count tensor (B,) or to a float penalty (the information
    criterion's). Returns name -> (estimates, count)."""
    start = torch.cat([pool[..., :2], 1.0 / pool[..., 2:]], -1).double()
    y, channel, codes = (x.to(torch.complex128) for x in (y, channel, codes))
    deepest = max([k_max if not torch.is_tensor(c) else int(c.max()) for c in counts.values()])
    results = {}
    with torch.no_grad():
        fits = refiner.greedy_fits(y, channel, codes, start, deepest)
        for name, choice in counts.items():
            fit = refiner.choose(y, channel, codes, fits, *((choice, None) if torch.is_tensor(choice) else (None, choice)))
            positions = fit.positions.to(pool.dtype)
            results[name] = (torch.cat([positions[..., :2], 1.0 / positions[..., 2:]], -1), fit.count)
    return results