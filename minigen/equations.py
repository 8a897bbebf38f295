r"""The lecture's equation catalogue, and the project's index of it (``minigen equations``).

Every equation of the lecture has an ID (``DIF-14``: Algorithm 2). The code that computes one carries
``Eq. <ID>`` in its docstring; the test that proves it carries ``@pytest.mark.equation("<ID>")``. This
module reads both out of a source checkout and writes ``lectures/equations.md``, one row per ID: slide,
equation, code (file and qualified name), tests. ``tests/test_equations.py`` fails when an ID has no
code or no test, or when the committed index is not what the command would write.

A docstring tag may name several IDs: ``Eq. DIF-4, DIF-14``, ``Eq. DIF-8/9`` (the prefix carries over),
``Eq. VAE-1…VAE-6`` or ``Eq. VAE-1..6`` (ranges). ``CATALOGUE["DIF-14"].statement`` gives the equation
itself, e.g. for a walk-through to print beside the code that computes it.
"""
from __future__ import annotations

import ast
import os
import re
from typing import NamedTuple


class Equation(NamedTuple):
    """One row of the lecture's catalogue: ID, slide title, and the equation in LaTeX or in words."""

    id: str
    slide: str
    statement: str      # the lecture's equation in LaTeX (between $ signs), or its statement in words


#: Sections in lecture order, by ID prefix.
SECTIONS = {"TAX": "Taxonomy", "AR": "Autoregressive models", "VAE": "Variational autoencoders",
            "FLOW": "Normalizing flows", "GAN": "Generative adversarial networks", "EBM": "Energy-based models",
            "DIF": "Diffusion models"}

_ROWS = [
    ("TAX-1", "Taxonomy of generative models",
     r"explicit (tractable / approximate) vs implicit density"),
    ("AR-1", "Fully visible belief network",
     r"$p(\mathbf x)=\prod_{i=1}^n p_\theta(x_i\mid x_1,\dots,x_{i-1})$"),
    ("AR-2", "PixelCNN",
     r"masked convolution, mask A (first layer, excludes the centre) and mask B (later layers)"),
    ("AR-3", "PixelRNN",
     r"LSTM over rows (Row LSTM): state of row $r$ depends only on rows $< r$"),
    ("AR-4", "PixelCNN / PixelRNN",
     r"sequential generation: one forward pass per pixel ($n$ passes for $n$ pixels)"),
    ("AR-5", "Improving PixelCNN",
     r"gated activation $\mathbf y=\tanh(W_f * \mathbf x)\odot\sigma(W_g * \mathbf x)$ with vertical/horizontal stacks (no blind spot)"),
    ("AR-6", "Improving PixelCNN",
     r"discretized logistic (mixture) likelihood (PixelCNN++)"),
    ("VAE-1", "Autoregressive vs VAE",
     r"$p_\theta(x)=\int p_\theta(z)\,p_\theta(x\mid z)\,dz$"),
    ("VAE-2", "VAE",
     r"$p_\theta(z\mid x)=p_\theta(x\mid z)p_\theta(z)/p_\theta(x)$"),
    ("VAE-3", "VAE derivation",
     r"$\log p_\theta(x)=\mathbb E_z[\log p_\theta(x\mid z)]-D_{KL}(q_\phi(z\mid x)\Vert p(z))+D_{KL}(q_\phi(z\mid x)\Vert p_\theta(z\mid x))$"),
    ("VAE-4", "VAE",
     r"$\mathcal L(x,\theta,\phi)=\mathbb E_z[\log p_\theta(x\mid z)]-D_{KL}(q_\phi(z\mid x)\Vert p_\theta(z))$, the ELBO"),
    ("VAE-5", "Reparameterization",
     r"$z=\mu_{z\mid x}+\epsilon\,\sigma_{z\mid x},\ \epsilon\sim\mathcal N(0,I)$"),
    ("VAE-6", "Generation / latent traversal",
     r"$z\sim p(z)$, $x\sim p_\theta(x\mid z)$; vary one $z_k$ at a time"),
    ("FLOW-1", "Normalizing flow",
     r"$\log p_\theta(x)=\log p_z(z_0)+\log\lvert\det \partial f_\theta(x)/\partial x\rvert$"),
    ("FLOW-2", "RealNVP",
     r"$y_{1:d}=x_{1:d}$, $y_{d+1:D}=x_{d+1:D}\odot\exp(s(x_{1:d}))+t(x_{1:d})$"),
    ("FLOW-3", "Flow pseudo-code",
     r"$\arg\max_\theta \sum_i \log p_\theta(x_i)$ (maximum likelihood)"),
    ("FLOW-4", "Effect of normalizing flow",
     r"planar flow $f(z)=z+u\,h(w^\top z+b)$ (Rezende & Mohamed)"),
    ("GAN-1", "GANs",
     r"$\min_G\max_D V(D,G)=\mathbb E_{x}[\log D(x)]+\mathbb E_z[\log(1-D(G(z)))]$"),
    ("GAN-2", "Algorithm 1",
     r"$k$ discriminator ascent steps on $\frac1m\sum[\log D(x^{(i)})+\log(1-D(G(z^{(i)})))]$, then one generator descent step"),
    ("GAN-3", "Generator objective",
     r"$\nabla_{\theta_g}\frac1m\sum\log(1-D(G(z^{(i)})))$, and the non-saturating variant $-\log D(G(z))$"),
    ("GAN-4", "Figure 1",
     r"$D^*(x)=p_{data}(x)/(p_{data}(x)+p_g(x))$; at $p_g=p_{data}$, $D=\tfrac12$ and $V=-\log 4$"),
    ("GAN-5", "Mode collapse",
     r"remedies: minibatch discrimination, experience replay"),
    ("GAN-6", "DCGAN",
     r"strided convs (D), fractional-strided convs (G), batchnorm, ReLU/Tanh (G), LeakyReLU (D)"),
    ("GAN-7", "Conditional GANs",
     r"$G(z\mid y)$, $D(x\mid y)$"),
    ("GAN-8", "CycleGAN",
     r"$\mathcal L=\mathcal L_{GAN}(G,D_Y)+\mathcal L_{GAN}(F,D_X)+\lambda\mathcal L_{cyc}$, $\mathcal L_{cyc}=\mathbb E\lVert F(G(x))-x\rVert_1+\mathbb E\lVert G(F(y))-y\rVert_1$"),
    ("GAN-9", "AdaIN",
     r"$\mathrm{BN},\ \mathrm{IN}$, $\mathrm{AdaIN}(x,y)=\sigma(y)\frac{x-\mu(x)}{\sigma(x)}+\mu(y)$"),
    ("GAN-10", "StyleGAN",
     r'mapping network $z\to w$, affine "A" (style), per-pixel noise broadcast "B"'),
    ("EBM-1", "Hopfield networks",
     r"$s_i\leftarrow \mathrm{sgn}(\sum_j w_{ij}s_j-\theta_i)$, $s_i\in\{-1,+1\}$"),
    ("EBM-2", "Updating neurons",
     r"synchronous; asynchronous I (random unit); asynchronous II (each unit with a probability per unit time)"),
    ("EBM-3", "Storing one pattern",
     r"$w_{ij}=\frac1N\mathcal P_i\mathcal P_j$"),
    ("EBM-4", "Storing many patterns",
     r"$w_{ij}=\frac1N\sum_k \mathcal P^k_i\mathcal P^k_j$ (Hebb)"),
    ("EBM-5", "Energy perspective",
     r"$E=-\sum_i\sum_{j<i}w_{ij}s_is_j+\sum_i\theta_is_i$"),
    ("EBM-6", "Boltzmann distribution",
     r"$p(\mathbf s_i)=e^{-E(\mathbf s_i)/kT}/\sum_j e^{-E(\mathbf s_j)/kT}$"),
    ("EBM-7", "Probability of a neuron's state",
     r"$p(s_i=1)=1/(1+\exp(-\Delta E_i/T))$"),
    ("EBM-8", "Example table",
     r"2 visible, 2 hidden units: $-E$, $e^{-E}$, $p(\mathbf v,\mathbf h)$, $p(\mathbf v)$; total 39.70"),
    ("EBM-9", "Thermal equilibrium / simulated annealing",
     r"Gibbs updates at temperature $T$, cooling schedule"),
    ("EBM-10", "Boltzmann machine training",
     r"$G=D_{KL}(P^+(V)\Vert P^-(V))$; $\partial G/\partial w_{ij}\propto -(p^+_{ij}-p^-_{ij})$"),
    ("EBM-11", "Restricted Boltzmann machines",
     r"bipartite energy; block Gibbs $p(h\mid v)$, $p(v\mid h)$; contrastive divergence"),
    ("EBM-12", "Deep belief networks",
     r"$P(x,h^1,\dots,h^\ell)=\big(\prod_{k=0}^{\ell-2}P(h^k\mid h^{k+1})\big)P(h^{\ell-1},h^\ell)$"),
    ("DIF-1", "ELBO recap",
     r"$\log p(x)\ge \mathbb E_{q}[\log p(x,z)/q(z\mid x)]$ = reconstruction − prior matching"),
    ("DIF-2", "Markovian hierarchical VAE",
     r"$p(x,z_{1:T})=p(z_T)p_\theta(x\mid z_1)\prod_{t=2}^T p_\theta(z_{t-1}\mid z_t)$; $q(z_{1:T}\mid x)=q(z_1\mid x)\prod q(z_t\mid z_{t-1})$"),
    ("DIF-3", "Forward diffusion",
     r"$q(x_t\mid x_{t-1})=\mathcal N(\sqrt{1-\beta_t}\,x_{t-1},\beta_t I)$"),
    ("DIF-4", "Diffusion kernel",
     r"$\bar\alpha_t=\prod_{s\le t}(1-\beta_s)$, $q(x_t\mid x_0)=\mathcal N(\sqrt{\bar\alpha_t}x_0,(1-\bar\alpha_t)I)$, $x_t=\sqrt{\bar\alpha_t}x_0+\sqrt{1-\bar\alpha_t}\epsilon$"),
    ("DIF-5", "Distribution under forward diffusion",
     r"$q(x_t)=\int q(x_0)q(x_t\mid x_0)dx_0$ (Gaussian convolution; ancestral sampling)"),
    ("DIF-6", "Reverse process",
     r"$p(x_{0:T})=p(x_T)\prod_t p_\theta(x_{t-1}\mid x_t)$, $p_\theta(x_{t-1}\mid x_t)=\mathcal N(\mu_\theta(x_t,t),\sigma_t^2I)$"),
    ("DIF-7", "Variational upper bound",
     r"$L=\mathbb E_q[L_T+\sum_{t>1}L_{t-1}+L_0]$"),
    ("DIF-8", "Tractable posterior",
     r"$q(x_{t-1}\mid x_t,x_0)=\mathcal N(\tilde\mu_t,\tilde\beta_tI)$, $\tilde\mu_t=\frac{\sqrt{\bar\alpha_{t-1}}\beta_t}{1-\bar\alpha_t}x_0+\frac{\sqrt{1-\beta_t}(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}x_t$, $\tilde\beta_t=\frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t$"),
    ("DIF-9", "Gaussian KL",
     r"$L_{t-1}=\mathbb E_q[\frac1{2\sigma_t^2}\lVert\tilde\mu_t-\mu_\theta\rVert^2]+C$"),
    ("DIF-10", "Noise parameterization",
     r"$\tilde\mu_t=\frac1{\sqrt{1-\beta_t}}(x_t-\frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\epsilon)$, $\mu_\theta=\frac1{\sqrt{1-\beta_t}}(x_t-\frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\epsilon_\theta(x_t,t))$"),
    ("DIF-11", "Weighting",
     r"$\lambda_t=\frac{\beta_t^2}{2\sigma_t^2(1-\beta_t)(1-\bar\alpha_t)}$; $L_{simple}$ sets $\lambda_t=1$"),
    ("DIF-12", "Discrete decoder",
     r"$p_\theta(x_0\mid x_1)=\prod_i\int_{\delta_-(x_0^i)}^{\delta_+(x_0^i)}\mathcal N(x;\mu^i_\theta(x_1,1),\sigma_1^2)dx$ with the $\pm1$ edge cases"),
    ("DIF-13", "$L_{simple}$, Algorithm 1",
     r"$\mathbb E_{t,x_0,\epsilon}\lVert\epsilon-\epsilon_\theta(\sqrt{\bar\alpha_t}x_0+\sqrt{1-\bar\alpha_t}\epsilon,t)\rVert^2$"),
    ("DIF-14", "Algorithm 2",
     r"$x_{t-1}=\frac1{\sqrt{\alpha_t}}(x_t-\frac{1-\alpha_t}{\sqrt{1-\bar\alpha_t}}\epsilon_\theta(x_t,t))+\sigma_tz$, no noise at $t=1$"),
    ("DIF-15", "Network architecture",
     r"U-Net with ResNet blocks and self-attention; sinusoidal time embedding; time fed by addition or adaptive group norm"),
    ("DIF-16", "Noise schedule and variances",
     r"linear $\beta_t$; $\sigma_t^2=\beta_t$ or $\tilde\beta_t$; cosine schedule; learned variances (Nichol & Dhariwal); SNR view (Kingma et al.)"),
    ("DIF-17", "Latent diffusion",
     r"pretrained encoder $\mathcal E$, decoder $\mathcal D$; diffusion in latent space; conditioning by cross-attention"),
]

#: The lecture's catalogue (week 13, deep generative models): ID -> slide and equation.
CATALOGUE = {row[0]: Equation(*row) for row in _ROWS}

_ITEM = r"(?:[A-Z]+-)?\d+"
_TAG = re.compile(r"Eq\.\s*([A-Z]+-\d+(?:\s*(?:,|/|and|…|\.\.|–)\s*" + _ITEM + r")*)")
_TOKEN = re.compile(r"([A-Z]+-)?(\d+)|(…|\.\.|–)")


def tagged_ids(text: str) -> list:
    """The IDs named by the ``Eq. …`` tags in ``text``, in order, without repeats."""
    found = []
    for chunk in _TAG.findall(text or ""):
        prefix, last, span = None, None, False
        for pre, number, dash in _TOKEN.findall(chunk):
            if dash:
                span = True
                continue
            prefix = pre[:-1] if pre else prefix
            n = int(number)
            numbers = range(last + 1, n + 1) if span and last is not None and last < n else [n]
            found += [f"{prefix}-{k}" for k in numbers]
            last, span = n, False
    return list(dict.fromkeys(found))


def python_files(root, folder):
    """``(path relative to root, path)`` of every ``.py`` file under ``root/folder``, sorted; caches skipped."""
    for base, dirs, files in os.walk(os.path.join(root, folder)):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")))
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(base, name)
                yield os.path.relpath(path, root).replace(os.sep, "/"), path


def _definitions(tree):
    """(qualified name, node) of every class and function, nested ones included."""
    stack = [("", node) for node in tree.body]
    while stack:
        outer, node = stack.pop(0)
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{outer}.{node.name}" if outer else node.name
            yield name, node
            stack += [(name, child) for child in node.body]


_MATH = re.compile(r":math:`([^`]+)`|\.\. math::\s*\n((?:[ \t]+\S.*(?:\n|$))+)")


def docstring_math(docstring: str | None) -> list:
    """The LaTeX of a docstring: its ``:math:`…``` roles and ``.. math::`` blocks, whitespace collapsed."""
    return [" ".join((inline or block).split()) for inline, block in _MATH.findall(docstring or "")]


def markdown_math(latex: str) -> str:
    """LaTeX that survives a Markdown table cell: ``|`` (a cell border there) written as ``\\vert``."""
    return latex.replace("\\|", "\\Vert ").replace("|", "\\vert ")


def code_locations(root: str) -> dict:
    """ID -> (locations, formula): ``"file: qualname"`` of each class or function whose docstring tags it
    (``"file"`` for a module docstring, listed only where no class or function of the source tags the ID),
    and the first formula of a docstring that opens with the ID's tag (None if none does)."""
    specific, general, formulas = {}, {}, {}
    for folder in ("minigen", "kernels"):
        for rel, path in python_files(root, folder):
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), path)
            for eq in tagged_ids(ast.get_docstring(tree)):
                general.setdefault(eq, []).append(rel)
            for name, node in _definitions(tree):
                docstring = ast.get_docstring(node)
                summary = (docstring or "").split("\n\n")[0]
                # the formula of the convention "Eq. <ID>: <LaTeX>": a docstring that opens with the tag
                opening = tagged_ids(summary.split(":math:")[0]) if summary.startswith("Eq.") else []
                for eq in tagged_ids(docstring):
                    specific.setdefault(eq, []).append(f"{rel}: {name}")
                    if eq in opening and eq not in formulas and docstring_math(summary):
                        formulas[eq] = docstring_math(summary)[0]
    return {eq: (specific.get(eq) or general[eq], formulas.get(eq)) for eq in {**general, **specific}}


def _equation_marks(decorators) -> list:
    """IDs of the ``pytest.mark.equation("ID", …)`` among ``decorators`` (or a ``pytestmark`` value)."""
    ids = []
    for node in decorators:
        for call in ([node] if not isinstance(node, (ast.List, ast.Tuple)) else node.elts):
            if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                    and call.func.attr == "equation"):
                ids += [arg.value for arg in call.args if isinstance(arg, ast.Constant)]
    return ids


def marked_tests(root: str) -> dict:
    """ID -> ``"file::test"`` of each test marked with it: its own marks, its class's, and the module's
    ``pytestmark``."""
    found = {}
    for rel, path in python_files(root, "tests"):
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        module_ids = [eq for node in tree.body if isinstance(node, ast.Assign)
                      and any(getattr(target, "id", None) == "pytestmark" for target in node.targets)
                      for eq in _equation_marks([node.value])]
        tests = []                                   # (node id, decorators that apply)
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
                tests.append((node.name, node.decorator_list))
            elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                tests += [(f"{node.name}::{m.name}", node.decorator_list + m.decorator_list) for m in node.body
                          if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)) and m.name.startswith("test")]
        for name, decorators in tests:
            for eq in dict.fromkeys(module_ids + _equation_marks(decorators)):
                found.setdefault(eq, []).append(f"{rel}::{name}")
    return found


def render_index(code: dict, tests: dict) -> str:
    """``lectures/equations.md``: per section, one row per catalogue ID. ``code`` maps an ID to (locations,
    formula) as :func:`code_locations` gives it."""
    out = ["# Equation index", "",
           "Generated by `minigen equations` (do not edit): every equation of the lecture's catalogue, the",
           "formula as the code's docstring writes it, the code whose docstring carries its `Eq. <ID>` tag,",
           "and the tests marked `@pytest.mark.equation(\"<ID>\")`. `tests/test_equations.py` fails when an",
           "ID lacks code or a test, or when this file differs from what the command writes.", ""]
    for prefix, title in SECTIONS.items():
        out += [f"## {title}", "", "| ID | slide | equation | in the code | code | tests |",
                "|---|---|---|---|---|---|"]
        for eq in (e for e in CATALOGUE.values() if e.id.split("-")[0] == prefix):
            where, formula = code.get(eq.id, ([], None))
            cells = ["<br>".join(f"`{place}`" for place in found) or "**missing**"
                     for found in (where, tests.get(eq.id, []))]
            shown = f"${markdown_math(formula)}$" if formula else "—"
            out.append(f"| {eq.id} | {eq.slide} | {markdown_math(eq.statement)} | {shown} | {cells[0]} | {cells[1]} |")
        out.append("")
    return "\n".join(out)


def source_root() -> str:
    """The checkout holding this package, its kernels and its tests (``minigen equations`` reads sources)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    missing = [d for d in ("minigen", "kernels", "tests") if not os.path.isdir(os.path.join(root, d))]
    if missing:
        raise FileNotFoundError(f"equations: {root} is not a minigen source checkout (no {', '.join(missing)}/); "
                                f"the index is built from the sources and tests of a clone")
    return root


def build_index(root: str | None = None) -> tuple:
    """(index text, IDs without code, IDs without tests) for the checkout at ``root``."""
    root = root or source_root()
    code, tests = code_locations(root), marked_tests(root)
    return (render_index(code, tests), [e for e in CATALOGUE if e not in code], [e for e in CATALOGUE if e not in tests])


def run_equations(args) -> int:
    """``minigen equations``: write the index (``--check``: only compare it with the committed one)."""
    root = source_root()
    text, no_code, no_test = build_index(root)
    path = os.path.join(root, "lectures", "equations.md")
    print(f"{len(CATALOGUE)} equations: {len(CATALOGUE) - len(no_code)} with code, "
          f"{len(CATALOGUE) - len(no_test)} with tests")
    for label, ids in (("no code (an `Eq. <ID>` docstring tag)", no_code),
                       ("no test (`@pytest.mark.equation`)", no_test)):
        if ids:
            print(f"  {label}: {', '.join(ids)}")
    if args.check:
        current = open(path, encoding="utf-8").read() if os.path.exists(path) else None
        if current != text:
            print(f"  {path} is stale: run `minigen equations`")
            return 1
        return 1 if no_code or no_test else 0
    os.makedirs(os.path.dirname(path), exist_ok=True)
    from .files import atomic_write_text
    atomic_write_text(path, text)
    print(f"wrote {path}")
    return 1 if no_code or no_test else 0
