"""Assignment starter code from the library itself: ``minigen assignments build OUT``.

The key lines of a derivation are marked in the library's own source, between a comment line
``# BEGIN SOLUTION 7.1`` and a comment line ``# END SOLUTION``. ``build`` copies the checkout (package, kernels, tests, lectures) to ``OUT`` and replaces every
region with ``raise NotImplementedError("Task 7.1: …")`` — the task's statement — so a student fills
in exactly those lines. Each task names the tests that check it; ``tests/conftest.py`` marks them
``task7_1``, so ``pytest -m task7_1`` runs one task's tests (they fail until the region is
filled, and pass once it is right). The instructor's copy is the checkout: its full suite passes.
"""
from __future__ import annotations

import os
import re
import shutil
from typing import NamedTuple

from .equations import python_files, source_root


class Task(NamedTuple):
    """One assignment task: ID (``'<section>.<n>'``), title, statement (the student copy's
    NotImplementedError message) and the pytest node ids of its tests."""

    id: str              # "<section>.<n>", sections numbered as the lecture's walk-throughs
    title: str
    statement: str       # what the student writes, in a sentence or two (the NotImplementedError message)
    tests: tuple         # pytest node ids ("tests/…py::test_name") that check it


_TASK_LIST = [
    Task("2.1", "causal masks A and B",
         "Zero the kernel taps after the centre in raster order (the rest of the centre row, every row below); "
         "at the centre, a mask-A output group sees only earlier input groups, a mask-B group also its own "
         "(Eq. AR-2).",
         ("tests/models/test_autoregressive.py::test_masks_a_and_b_on_a_3x3_kernel",
          "tests/models/test_autoregressive.py::test_causality_through_the_whole_network")),
    Task("2.2", "the gated activation",
         "Gate the features: tanh of the first half of each channel group's features times the sigmoid of "
         "the second half, y = tanh(W_f * x) * sigmoid(W_g * x), reshaped to (b, n // 2, h, w) (Eq. AR-5).",
         ("tests/models/test_autoregressive.py::test_gate_is_tanh_times_sigmoid",)),
    Task("2.3", "a fully visible sigmoid belief net",
         "Compute every pixel's logit from the pixels before it at once: a linear map of the ±1 image whose "
         "weights are masked to be strictly lower-triangular (self.mask), plus the bias (Eq. AR-1).",
         ("tests/models/test_autoregressive.py::test_probabilities_of_all_2_to_the_10_images_sum_to_one",
          "tests/models/test_autoregressive.py::test_log_likelihood_is_the_sum_of_per_pixel_conditionals")),
    Task("3.1", "the reparameterisation trick",
         "Return a sample z = mu + eps * sigma whose randomness eps ~ N(0, I) carries no parameters, so that "
         "gradients flow to mu and sigma (Eq. VAE-5).",
         ("tests/models/test_vae.py::test_reparameterized_gradient_matches_finite_differences",
          "tests/models/test_vae.py::test_reparameterized_samples_have_the_stated_moments")),
    Task("3.2", "the Gaussian KL divergence",
         "Return the elementwise KL(q || p) of two diagonal Gaussians in closed form: "
         "log(sigma_p / sigma_q) + (sigma_q^2 + (mu_q - mu_p)^2) / (2 sigma_p^2) - 1/2 (Eq. VAE-4).",
         ("tests/models/test_vae.py::test_closed_form_kl_matches_monte_carlo",)),
    Task("3.3", "the importance-weighted average",
         "Return log((1/k) sum_i exp(x_i)) along dim without overflow (logsumexp), the log of the "
         "importance-sampling estimate of p(x) (Eq. VAE-1).",
         ("tests/models/test_vae.py::test_importance_sampling_estimate_converges_to_exact_marginal",
          "tests/models/test_vae.py::test_iwae_bound_increases_with_k")),
    Task("4.1", "the affine coupling layer",
         "From the masked input compute (s, t) = self._scale_shift(x * mask) and return y = x exp(s) + t "
         "with log|det J| = the sum of s per example (masked entries have s = t = 0) (Eq. FLOW-2).",
         ("tests/models/test_flows.py::test_affine_coupling_is_the_slide_formula",)),
    Task("4.2", "inverting a coupling",
         "Invert y = x exp(s) + t: the masked half of y equals that of x, so (s, t) can be recomputed from "
         "it; return x = (y - t) exp(-s) (Eq. FLOW-2).",
         ("tests/models/test_flows.py::test_realnvp_inverse_of_forward_is_the_identity",)),
    Task("4.3", "the planar flow's log-determinant",
         "With a = tanh(w^T z + b), the planar flow's Jacobian determinant is 1 + (1 - a^2) w^T u_hat; "
         "return log of its absolute value per example (Eq. FLOW-4).",
         ("tests/models/test_flows.py::test_planar_flow_is_the_slide_formula_with_the_right_log_det",)),
    Task("5.1", "the value of the game",
         "Compute V(D, G) on a minibatch from the discriminator's logits: the mean of log D(x) over real "
         "examples plus the mean of log(1 - D(G(z))) over fakes (Eq. GAN-1); use log_d and log_one_minus_d.",
         ("tests/models/test_gans.py::test_value_function_equals_hand_computation",)),
    Task("5.2", "the non-saturating generator loss",
         "Return what the generator descends in the non-saturating game: -(1/m) sum_i log D(G(z_i)), from "
         "the fakes' logits (use log_d) (Eq. GAN-3).",
         ("tests/models/test_gans.py::test_generator_losses_equal_hand_computation",)),
    Task("5.3", "the optimal discriminator",
         "Return D*(x) = p_data(x) / (p_data(x) + p_g(x)) on a finite set, 1/2 where both are 0 "
         "(Eq. GAN-4).",
         ("tests/models/test_gans.py::test_optimal_discriminator_and_theorem_1_on_a_finite_set",)),
    Task("6.1", "Hebb's rule",
         "Store K patterns of +-1 (rows of p, N units each) as w_ij = (1/N) sum_k P^k_i P^k_j (Eq. EBM-4).",
         ("tests/models/test_hopfield.py::test_slide_weights_are_hebb_sum_and_the_network_zeroes_the_diagonal",
          "tests/models/test_hopfield.py::test_a_single_stored_pattern_is_a_fixed_point")),
    Task("6.2", "the Hopfield energy",
         "Compute E = -sum_i sum_{j<i} w_ij s_i s_j + sum_i theta_i s_i for every row of states s, each pair "
         "counted once (Eq. EBM-5).",
         ("tests/models/test_hopfield.py::test_energy_matches_the_double_sum",
          "tests/models/test_hopfield.py::test_energy_never_increases_under_asynchronous_updates")),
    Task("6.3", "a unit's probability of switching on",
         "Return p(s_i = 1 | the other units) = sigmoid(Delta E_i / T) from the energy gap (Eq. EBM-7).",
         ("tests/models/test_boltzmann.py::test_switch_on_probability_is_the_ratio_of_exact_joint_probabilities",)),
    Task("6.4", "the RBM's log-likelihood gradient",
         "Compute the weight gradient <v h>_data - <v h>_model and the hidden-bias gradient <h>_data - "
         "<h>_model from the two phases' visibles and hidden probabilities (Eq. EBM-11).",
         ("tests/models/test_rbm.py::test_log_likelihood_gradient_is_minus_the_free_energy_gradient",)),
    Task("7.1", "the diffusion kernel in one jump",
         "Compute each example's coefficients of the jump x_t = a x_0 + b eps: a = sqrt(abar_t) and "
         "b = sqrt(1 - abar_t) (schedule.alpha_bars holds abar; coefficient(values, t, x0) picks each "
         "example's entry, shaped to broadcast) (Eq. DIF-4).",
         ("tests/models/test_diffusion.py::test_composing_single_steps_gives_the_closed_form_kernel",
          "tests/models/test_diffusion.py::test_sampled_chains_match_the_one_jump_kernel")),
    Task("7.3", "Algorithm 1's loss",
         "Jump to x_t with the drawn t and noise, then compare the network's output model(x_t, t) with the "
         "target (noise for eps-prediction) by the squared error (Eq. DIF-13).",
         ("tests/models/test_diffusion.py::test_algorithm_1_loss_line_by_line",)),
    Task("7.4", "the forward process's posterior",
         "Compute the mean of q(x_{t-1} | x_t, x_0): c0 x_0 + ct x_t with c0 = sqrt(abar_{t-1}) beta_t / "
         "(1 - abar_t) and ct = sqrt(alpha_t)(1 - abar_{t-1}) / (1 - abar_t) per example (Eq. DIF-8).",
         ("tests/models/test_diffusion.py::test_posterior_is_bayes_rule_for_the_gaussian_product",)),
    Task("7.2", "Algorithm 2's update",
         "Compute result = c1 (x_t - c2 eps) + sigma z in x_t's dtype (dt), adding no noise when noise is "
         "None (the last step) (Eq. DIF-14).",
         ("tests/kernels/test_diffusion_kernels.py::test_reference_is_algorithm_2_line_4",)),
]
#: The tasks by id, in lecture order (section 2 autoregressive … 7 diffusion).
TASKS = {task.id: task for task in sorted(_TASK_LIST, key=lambda task: tuple(map(int, task.id.split('.'))))}

_BEGIN = re.compile(r"^(\s*)# BEGIN SOLUTION (\d+\.\d+)\s*$")
_END = re.compile(r"^\s*# END SOLUTION\s*$")
#: What a student copy holds: the package, its kernels, tests, walk-throughs and packaging.
COPIED = ("minigen", "kernels", "tests", "lectures", "setup.py", "pytest.ini", "README.md")


def marker_name(task_id: str) -> str:
    """The pytest marker of a task: ``"7.1"`` → ``task7_1``."""
    return "task" + task_id.replace(".", "_")


def solution_regions(root: str | None = None) -> list:
    """``(file relative to root, first line, last line, task id)`` of every marked region (1-based lines of
    the BEGIN and END markers). Unknown task ids, nesting and unclosed regions are errors."""
    root = root or source_root()
    regions = []
    for rel, path in (found for folder in ("minigen", "kernels") for found in python_files(root, folder)):
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        open_at = None
        for i, line in enumerate(lines, 1):
            begin, end = _BEGIN.match(line), _END.match(line)
            if begin:
                if open_at:
                    raise ValueError(f"assignments: {rel}:{i}: a region opens inside the one at line {open_at[0]}")
                if begin.group(2) not in TASKS:
                    raise ValueError(f"assignments: {rel}:{i}: unknown task {begin.group(2)}")
                open_at = (i, begin.group(2))
            elif end:
                if not open_at:
                    raise ValueError(f"assignments: {rel}:{i}: END SOLUTION without a BEGIN")
                if line[:len(line) - len(line.lstrip())] != _BEGIN.match(lines[open_at[0] - 1]).group(1):
                    raise ValueError(f"assignments: {rel}:{i}: END SOLUTION is not indented as its BEGIN")
                regions.append((rel, open_at[0], i, open_at[1]))
                open_at = None
        if open_at:
            raise ValueError(f"assignments: {rel}:{open_at[0]}: SOLUTION region never ends")
    return regions


def _student_text(lines: list, regions: list) -> list:
    """``lines`` with each region (BEGIN … END, 1-based) replaced by one ``raise`` at its indentation."""
    out, i = [], 0
    for _, start, end, task_id in sorted(regions, key=lambda r: r[1]):
        indent = _BEGIN.match(lines[start - 1]).group(1)
        task = TASKS[task_id]
        message = f"Task {task.id}, {task.title}: {task.statement}"
        out += lines[i:start - 1] + [f"{indent}raise NotImplementedError({message!r})  # TODO Task {task.id}"]
        i = end
    return out + lines[i:]


def build(out: str, solutions: bool = False, root: str | None = None) -> str:
    """Write the student copy of the checkout at ``root`` into ``out`` (which must not exist); with
    ``solutions`` the regions stay (the instructor's copy). Returns ``out``."""
    root = root or source_root()
    if os.path.exists(out):
        raise FileExistsError(f"assignments build: {out} already exists; choose a new folder")
    regions = solution_regions(root)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc", ".hypothesis", "*.egg-info")
    for name in COPIED:
        source = os.path.join(root, name)
        target = os.path.join(out, name)
        if os.path.isdir(source):
            shutil.copytree(source, target, ignore=ignore)
        else:
            os.makedirs(out, exist_ok=True)
            shutil.copy2(source, target)
    if not solutions:
        for rel in sorted({r[0] for r in regions}):
            path = os.path.join(out, rel)
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
            with open(path, "w", encoding="utf-8") as f:
                f.write("\n".join(_student_text(lines, [r for r in regions if r[0] == rel])) + "\n")
    with open(os.path.join(out, "ASSIGNMENTS.md"), "w", encoding="utf-8") as f:
        f.write(task_sheet(regions))
    return out


def task_sheet(regions: list) -> str:
    """``ASSIGNMENTS.md``: every task, where it lives and the command that checks it."""
    lines = ["# Assignments", "",
             "Each task is a few lines of the library, replaced by `raise NotImplementedError(\"Task …\")`.",
             "Fill them in, then run the task's tests: `python -m pytest -q -m task7_1` (they fail until",
             "the lines are right). `python -m pytest -q` runs everything.", ""]
    for task in TASKS.values():
        where = ", ".join(f"`{rel}`" for rel, _, _, task_id in regions if task_id == task.id)
        lines += [f"## Task {task.id}: {task.title}", "", task.statement, "",
                  f"- where: {where}", f"- check: `python -m pytest -q -m {marker_name(task.id)}`", ""]
    return "\n".join(lines)


def run_assignments(args) -> int:
    """``minigen assignments list|build OUT [--solutions]``."""
    if args.action == "list":
        regions = solution_regions()
        for task in TASKS.values():
            where = ", ".join(f"{rel}:{start}" for rel, start, _, task_id in regions if task_id == task.id)
            print(f"Task {task.id:5s} {task.title:40s} {where}")
        return 0
    if not args.out:
        raise ValueError("assignments build: give the folder to write, e.g. `minigen assignments build student`")
    out = build(args.out, solutions=args.solutions)
    kind = "instructor" if args.solutions else "student"
    print(f"wrote the {kind} copy to {out} ({len(TASKS)} tasks; see {os.path.join(out, 'ASSIGNMENTS.md')})")
    return 0
