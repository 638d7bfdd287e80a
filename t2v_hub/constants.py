"""Defaults shared across modules (values from the paper and its supplement)."""

from __future__ import annotations

import math
import os

# Probe
DEFAULT_PROBE = "tf_efficientnet_lite0"
TEST_PROBE = "test_efficientnet"

# Head fitting (supplement 4.1/4.2): Adam, class-balanced draws with replacement.
HEAD_EPOCHS = 2
# Head-only phase: Adam's customary 1e-3 (the supplement's 1e-4 is its joint-phase rate; see HeadConfig).
HEAD_LR = 1e-3
HEAD_WEIGHT_DECAY = 5e-4
HEAD_DRAWS_PER_EPOCH = 10_000
DENSE_HEAD_DRAWS_PER_EPOCH = 2_000  # pixel-wise decoder (see config.HeadConfig)
HEAD_BATCH_SIZE = 64

# Fisher
FISHER_METHODS = ("montecarlo", "empirical", "batch", "variational")
DEFAULT_FISHER_METHOD = "montecarlo"
DEFAULT_BATCH_SIZE = 32

# Variational (robust) Fisher, supplement section 6 and the reference defaults.
VARIATIONAL_BETA = 1e-7
VARIATIONAL_LR = 1e-2
VARIATIONAL_HEAD_LR = 1e-4
VARIATIONAL_INPUT_VAR_FLOOR = 1e-2
VARIATIONAL_VAR_INIT_SCALE = 0.05
# The default optimiser of the variational Fisher (t2v_hub.fisher._variational_run.OPTIMIZERS);
# part of the trivial embedding's cache key, so a t0 cached under another default is not reused.
VARIATIONAL_OPTIMIZER = "gauss_newton"

# Distances
ASYM_ALPHA = 0.15
# alpha of d_asym for variational embeddings, whose trivial term is each expert's own learned
# prior (t2v_hub.selection.prior_term). benchmarks/variational_selection.py's sweep on the zoo
# (Gauss-Newton; loo / mixed / lodo): 0.5 gives +23.6 / +26.5 / +25.4%, below d_sym's +24.0 /
# +31.1 / +28.5% on all three; 1.0 is best on two (+26.3 / +20.8 / +22.8%) but sits at a cliff
# (1.5: +51% mixed). 0.5 is the robust choice, cross-validation over pools picks 0.5 or 1.0.
VARIATIONAL_ASYM_ALPHA = 0.5

# Default shortlist of `recommend --rerank`: on the held-out set of issue 11, "d_sym top 3, then
# LogME" gave +12.0% relative error (vs LogME on all 12 experts +8.3%, d_sym alone +17.5%) with 3
# of 12 forward passes.
DEFAULT_SHORTLIST = 3
# Stage 2's shortlist also takes this many "generalists" (lowest mean relative error on a selector's
# training tasks) when a selector records them: top 3 + 1 was within 2 points of LogME on every expert
# on all four meta-tasks of the zoo, with a third of its passes (BENCHMARKS.md, "Two stages").
DEFAULT_GENERALISTS = 1

# MODEL2VEC (supplement 4.3)
M2V_ALPHA_SOFT = 20.0
M2V_LR = 0.05
M2V_WEIGHT_DECAY = 5e-4
M2V_EPOCHS = 81
# bias="layer": full-batch Adam steps and the L2 pull of the per-layer log-weights towards d_sym's.
M2V_LAYER_EPOCHS = 200
M2V_LAYER_DECAY = 1e-3
M2V_BIAS_KINDS = ("both", "filter", "scalar", "none", "layer")
M2V_BIAS = "layer"  # see SelectorConfig.bias
# The static prior's weight in the selector's offset, cross-validated over clusters of the training tasks
# (selection/prior_offset.py); "none" is MODEL2VEC without it (the supplement's, and selectors saved before).
M2V_PRIOR = "cv"
M2V_PRIOR_FOLDS = 4
M2V_PRIOR_KINDS = ("cv", "none")

# Hub
TASK2VEC_TAG = "task2vec"
CARD_BLOCK_KEY = "task2vec"
EMBEDDING_DIR = "task2vec"
FORMAT_VERSION = "1"

# Plugins
PROBE_ENTRY_POINT_GROUP = "t2v_hub.probes"
INTEGRATION_ENTRY_POINT_GROUP = "t2v_hub.integrations"


def quiet_env() -> bool:
    """``T2V_HUB_QUIET=1`` (set by the CLI's --quiet): no hints from deep inside the library either."""
    return os.environ.get("T2V_HUB_QUIET", "").lower() in {"1", "true", "yes"}


def cache_dir() -> str:
    """Embedding cache; overridable with T2V_HUB_CACHE."""
    default = os.path.join(os.path.expanduser("~"), ".cache", "t2v_hub")
    return os.environ.get("T2V_HUB_CACHE") or default  # set but empty: the default


# Decoded images (uint8 crops) are kept in RAM up to this many bytes; a bigger task's decode
# cache is a file-backed tensor under cache_dir()/decoded (see data/rows.py). 2 GiB: ~14k
# images at 224 px. Overridable with T2V_HUB_DECODE_RAM_MB.
DECODE_RAM_BYTES = 2 * 1024**3
# Largest probe input side accepted (pixels). timm's pretrained configs stop around 1,000 px; past
# this a single decoded batch no longer fits in memory and the size is a typo, not a choice.
MAX_INPUT_SIZE = 4096


def decode_ram_bytes() -> int:
    """``T2V_HUB_DECODE_RAM_MB`` in bytes (a number of MiB, 0 = always on disk), else the default."""
    mb = os.environ.get("T2V_HUB_DECODE_RAM_MB", "").strip()
    if not mb:
        return DECODE_RAM_BYTES
    try:
        value = float(mb)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value < 0:
        from .errors import ConfigError

        raise ConfigError(f"T2V_HUB_DECODE_RAM_MB={mb!r} is not a size in MiB; set it to a number >= 0 "
                          "(e.g. 2048; 0 keeps decoded images on disk) or unset it")
    return int(value * 1024**2)
