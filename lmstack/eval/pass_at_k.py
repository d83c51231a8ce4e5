"""pass@k: the probability that at least one of k samples passes the tests, estimated without bias from n >= k
samples of which c pass (Chen et al. 2021, "Evaluating Large Language Models Trained on Code", section 2.1).

Drawing k of the n samples without replacement, all k fail with probability C(n-c, k) / C(n, k), so

    pass@k = 1 - C(n-c, k) / C(n, k) = 1 - prod_{i=n-c+1}^{n} (1 - k / i)

The product form never builds the huge binomials. Sampling k times and checking "any passed" instead (the naive
estimate 1 - (1 - c/n)^k) is biased low for k > 1; the unbiased estimator is what the paper reports.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem: n samples, c correct. Worked example: n=5, c=2, k=2 ->
    1 - C(3,2)/C(5,2) = 1 - 3/10 = 0.7."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(num_samples: Sequence[int], num_correct: Sequence[int], k: int) -> float:
    """pass@k averaged over problems (each with its own n and c)."""
    return float(np.mean([pass_at_k(n, c, k) for n, c in zip(num_samples, num_correct)]))
