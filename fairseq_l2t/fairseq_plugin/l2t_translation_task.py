"""`--task l2t_translation`: translation whose loss is set by a learning teacher.

Every --teacher-update-interval updates, once the update's gradients are
computed and before the student's optimizer steps, the task looks
--lookahead-steps differentiable SGD steps ahead from the current student on
the update's training batches (all micro-batches of --update-freq, on every
data-parallel rank), scores the expected-BLEU surrogate on teacher-forced
batches of the reward subset (default `valid`; never the test set), and takes
one step of the teacher's own optimizer on the exact hypergradient; the new
teacher sets the loss from the next update on.  The student's optimizer never
sees the teacher's parameters.

What a teacher update costs (--lookahead-engine): with one lookahead step
(the default) the one_step engine needs no double backward, and where the
maths allows it reuses the real update: the lookahead step is the real
step's gradient (fairseq has already summed and normalised it over
micro-batches and ranks; exact for the l2t_dynamic criterion with token
averaging, no --clip-norm, no --fp16/--bf16/--amp and one micro-batch per
update), and the teacher's term is one forward-mode pass that replays the
real forward's dropout masks.  --lookahead-tangent finite_difference takes
that term as a central difference of two plain forwards instead (not exact:
about 1e-4 relative error in float32; cheaper on CPU, where PyTorch's
forward mode costs about four plain forwards).  --lookahead-tokens N takes
that term (or the whole lookahead, with more steps) on a random part of the
update's sentences holding at most N target tokens: an estimate, for a
cheaper update.

Data parallelism (fairseq's --distributed-world-size): each rank looks ahead
on its own batches with the gradient summed over ranks, the reward is averaged
over ranks (each scores its share of --reward-batches), and the state features
count every rank's tokens, so every rank computes the same hypergradient and
holds a bit-identical teacher (checked after every teacher update).

Between task and criterion, fairseq's way: before every forward the task
pushes the loss parameters for the student's current state into the
criterion (`set_loss_params`); the criterion reports the state statistics of
each training micro-batch as scalar `_l2t_*` keys of its logging_output, which
the task adds up per update in train_step (dummy batches excluded).

The teacher, its optimizer and the non-finite policy live in a
TeacherController (fairseq_l2t/teacher_controller.py), as in image_cls: a
non-finite hypergradient skips the teacher update, a non-finite loss from the
teacher is replaced by the last finite one (both counted in the logs as
teacher_skipped), and --max-non-finite such events in a row stop the run with
one line, deferred to optimizer_step so that nothing poisoned is saved.

Design decisions (documented, not from the paper): the lookahead uses plain
SGD with --lookahead-lr whatever optimizer trains the student (differentiating
through Adam is out of scope); the loss family is O(V r) over the target
vocabulary: the well-posed smoothing (the default: chosen on valid BLEU, where
the per-type soft_target_lowrank drifted and hurt) or soft_target_lowrank,
bounded below with no floor and starting exactly at label smoothing
--teacher-smoothing; or the paper's bilinear W = diag + low rank
(--teacher-structure lowrank, whose non-target log-probabilities are smoothly
floored at log(--teacher-prob-floor): without it the unsquashed loss is
unbounded below, and a 500-update Transformer run collapsed to repeating one
word);
state progress is updates seen / --teacher-horizon (default --max-update, or
100k when no --max-update is set).  Configuration mistakes raise
L2TConfigError, printed by fairseq-train as one line.
"""

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from fairseq import metrics, utils
from fairseq.dataclass import ChoiceEnum
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask
from omegaconf import II

from ..distributed import all_reduce_sum, check_identical, is_distributed, rank, world_size
from ..expected_bleu import expected_bleu_dev_objective
from ..functional_student import FunctionalStudent, SGDConfig
from ..hypergradient import ENGINES, TANGENTS, RngState, Unroll, hypergradient, one_step_hypergradient, rng_state
from ..non_finite import NonFiniteStop, all_finite
from ..state_features import StudentState
from ..teacher import TEACHER_FORMS
from ..teacher_controller import SCHEMA, TeacherController
from ..teacher_spec import TeacherSpec, teacher_mismatch
from .errors import L2TConfigError, L2TNonFiniteError
from .l2t_dynamic_criterion import STATE_SUM_KEYS, L2TDynamicCriterion, TeacherOwningTask
from .micro_batches import sentences_within, stack_micro_batches
from .readable_checkpoints import UNREADABLE, expect_target_vocabulary

logger = logging.getLogger(__name__)

SUPPORTED_ARCH_PREFIXES = ("transformer", "lstm")
DEFAULT_HORIZON = 100_000


@dataclass
class L2TTranslationConfig(TranslationConfig):
    teacher_update_interval: int = field(
        default=10, metadata={"help": "update the teacher every N student updates (0: never, a frozen teacher)"})
    lookahead_steps: int = field(
        default=1, metadata={"help": "k differentiable student SGD steps before the dev reward"})
    lookahead_lr: float = field(default=0.1, metadata={"help": "SGD learning rate of the lookahead steps"})
    lookahead_engine: ChoiceEnum(["auto", *(engine for engine in ENGINES if engine != "unrolled")]) = field(
        default="auto", metadata={"help": "hypergradient engine of the lookahead: one_step (one step, no double "
                                          "backward, reuses the real update where exact), stored or checkpointed "
                                          "(any number of steps; checkpointed keeps memory flat); auto: one_step "
                                          "for one step, else stored"})
    lookahead_tangent: ChoiceEnum(list(TANGENTS)) = field(
        default="forward_mode", metadata={"help": "how the one_step engine differentiates the log-probabilities "
                                                  "along the dev gradient: forward_mode (exact) or "
                                                  "finite_difference (two plain forwards, about 1e-4 relative "
                                                  "error in float32, cheaper on CPU)"})
    lookahead_tokens: int = field(
        default=0, metadata={"help": "look ahead on a random part of the update's sentences with at most this "
                                     "many target tokens (at least one sentence; 0: the whole update)"})
    teacher_lr: float = field(default=1e-3, metadata={"help": "learning rate of the teacher's optimizer"})
    teacher_optimizer: ChoiceEnum(["adam", "sgd"]) = field(
        default="adam", metadata={"help": "the teacher's own optimizer"})
    teacher_max_grad_norm: float = field(
        default=1.0, metadata={"help": "clip the teacher's hypergradient norm (0: no clipping)"})
    teacher_structure: ChoiceEnum(["soft_target_lowrank", "smoothing", "lowrank"]) = field(
        default="smoothing", metadata={
            "help": "the teacher's loss family: a well-posed one, bounded below and minimised at a proper "
                    "distribution with no floor: smoothing (one epsilon and one scale; the default, chosen on valid "
                    "BLEU) or soft_target_lowrank (per-type smoothing mass, scale and a rank-r spread of the "
                    "mass); or the bilinear lowrank "
                    "(W = diag(d) + U V^T, unbounded below without the probability floor)"})
    teacher_smoothing: float = field(
        default=0.0, metadata={"help": "a well-posed teacher starts exactly at label smoothing with this epsilon "
                                       "(0: cross-entropy)"})
    teacher_rank: int = field(default=8, metadata={"help": "rank r of the low-rank structures over the vocabulary"})
    teacher_gates: int = field(default=2, metadata={"help": "state-dependent gates of the teacher"})
    teacher_form: ChoiceEnum(list(TEACHER_FORMS)) = field(
        default="gate", metadata={"help": "gate: phi = base + sum_g tanh(a_g . s) delta_g (the authors' demo); "
                                          "attention: a softmax mix of loss parameter sets (the paper)"})
    teacher_fixed_scale: bool = field(
        default=False, metadata={"help": "well-posed structures: no loss scale (the teacher shapes the targets "
                                         "but cannot act as a learning-rate factor)"})
    teacher_squash: bool = field(
        default=False, metadata={"help": "use the paper's -sigmoid(z) loss instead of -z (CE at init)"})
    teacher_prob_floor: Optional[float] = field(
        default=None, metadata={"help": "smooth floor on the non-target probabilities in the lowrank teacher's loss "
                                        "(0: none; default 1e-4, and none for the well-posed structures, which need "
                                        "none); without it a negative weight makes the bilinear loss unbounded below "
                                        "and the student collapses"})
    teacher_init: Optional[str] = field(
        default=None, metadata={"help": "start from the teacher saved in this l2t_translation checkpoint"})
    teacher_horizon: int = field(
        default=0, metadata={"help": "updates that count as the whole run for the progress feature "
                                     "(0: --max-update, or 100k without one)"})
    reward_subset: str = field(
        default="valid", metadata={"help": "data subset whose teacher-forced expected BLEU is the reward"})
    reward_max_sentences: int = field(default=32, metadata={"help": "sentences per reward batch"})
    reward_batches: int = field(
        default=0, metadata={"help": "reward batches per teacher update, shared out over the data-parallel ranks "
                                     "(0: one per rank); the reward is their mean"})
    max_non_finite: int = field(
        default=10, metadata={"help": "stop the run after this many non-finite teacher losses or hypergradients "
                                      "in a row"})
    reward_max_order: int = field(default=4, metadata={"help": "max n-gram order of the expected-BLEU reward"})
    seed: int = II("common.seed")
    max_update: int = II("optimization.max_update")
    update_freq: list[int] = II("optimization.update_freq")
    clip_norm: float = II("optimization.clip_norm")
    sentence_avg: bool = II("optimization.sentence_avg")
    fp16: bool = II("common.fp16")
    bf16: bool = II("common.bf16")
    amp: bool = II("common.amp")


@register_task("l2t_translation", dataclass=L2TTranslationConfig)
class L2TTranslationTask(TranslationTask, TeacherOwningTask):
    cfg: L2TTranslationConfig

    def __init__(self, cfg: L2TTranslationConfig, src_dict, tgt_dict):
        super().__init__(cfg, src_dict, tgt_dict)
        expect_target_vocabulary(len(tgt_dict))  # fairseq's loader now refuses other dictionaries
        for name in ("lookahead_steps", "reward_max_sentences", "reward_max_order", "max_non_finite"):
            if getattr(cfg, name) < 1:
                raise L2TConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
        for name in ("lookahead_lr", "teacher_lr"):
            if not (getattr(cfg, name) > 0 and math.isfinite(getattr(cfg, name))):
                raise L2TConfigError(f"--{name.replace('_', '-')} must be a positive number, got {getattr(cfg, name)}")
        try:
            self.teacher_spec = TeacherSpec.from_options(cfg, structure=str(cfg.teacher_structure),
                                                         form=str(cfg.teacher_form), seed=cfg.seed)
        except ValueError as err:
            raise L2TConfigError(str(err)) from None
        if cfg.teacher_horizon < 0:
            raise L2TConfigError(f"--teacher-horizon must be >= 0, got {cfg.teacher_horizon}")
        if str(cfg.lookahead_engine) == "one_step" and cfg.lookahead_steps != 1:
            raise L2TConfigError(f"--lookahead-engine one_step differentiates one step; --lookahead-steps is "
                                 f"{cfg.lookahead_steps} (use stored or checkpointed)")
        if cfg.lookahead_tokens < 0:
            raise L2TConfigError(f"--lookahead-tokens must be >= 0, got {cfg.lookahead_tokens}")
        if cfg.teacher_update_interval < 0:
            raise L2TConfigError(f"--teacher-update-interval must be >= 0, got {cfg.teacher_update_interval}")
        if cfg.reward_batches < 0 or cfg.reward_batches % world_size():
            raise L2TConfigError(f"--reward-batches {cfg.reward_batches} must be 0 or a multiple of the "
                                 f"{world_size()} data-parallel ranks (each scores an equal share)")
        horizon = cfg.teacher_horizon or (cfg.max_update if cfg.max_update and cfg.max_update > 0 else DEFAULT_HORIZON)
        self.student_state = StudentState(len(tgt_dict), total_steps=horizon, ignore_index=tgt_dict.pad(),
                                          sync=all_reduce_sum if is_distributed() else None)
        self.teacher = self.teacher_spec.build(len(tgt_dict), self.student_state.feature_names)
        if cfg.teacher_init:
            self._load_teacher(cfg.teacher_init)
        self.controller = TeacherController(self.teacher, cfg.teacher_lr, cfg.teacher_optimizer,
                                            cfg.teacher_max_grad_norm, cfg.max_non_finite)
        self._last_teacher_update = -1
        engine = str(cfg.lookahead_engine)
        self._engine = engine if engine != "auto" else "one_step" if cfg.lookahead_steps == 1 else "stored"
        self._tangent = str(cfg.lookahead_tangent)
        if self._tangent != "forward_mode" and self._engine != "one_step":
            raise L2TConfigError(f"--lookahead-tangent {self._tangent} is the one_step engine's (one lookahead "
                                 f"step); the {self._engine} engine differentiates in reverse mode")
        self._reuses_real_step = self._engine == "one_step" and not (
            cfg.clip_norm > 0 or cfg.sentence_avg or cfg.fp16 or cfg.bf16 or cfg.amp or max(cfg.update_freq) > 1)
        self._real_loss_is_teachers = False
        if self._engine != "one_step":
            how = f"{self._engine} engine"
        elif self._reuses_real_step:
            how = "one_step engine, reusing the real update's gradient"
        else:
            how = ("one_step engine with its own step (reuse needs one micro-batch per update, token averaging and "
                   "no --clip-norm/--fp16/--bf16/--amp)")
        if self._engine == "one_step":
            how += f", {cfg.lookahead_tangent} tangent"
        logger.info(f"teacher updates: {how}, {cfg.lookahead_steps} lookahead step(s) on "
                    f"{cfg.lookahead_tokens or 'all the'} target tokens of the update")
        self._reward_batches: list[dict] | None = None
        self._phi_cache: tuple[int, dict] | None = None
        # what the current update has seen so far: its micro-batches (with the generator state their dropout
        # masks came from) and their state statistics
        self._collecting_update = -1
        self._update_samples: list[tuple[dict, bool, RngState]] = []
        self._update_sums = torch.zeros(len(STATE_SUM_KEYS), dtype=torch.float64)

    # ---- the teacher's view of the student -------------------------------------------------------
    def _loss_params(self, device: torch.device) -> dict:
        """phi_t for the student's current state, once per state step (never a non-finite one)."""
        key = self.student_state.step
        if self._phi_cache is None or self._phi_cache[0] != key:
            self.teacher.to(device)
            skipped = self.controller.outputs.total
            phi = self.controller.loss_params(self.student_state.features(device=device), f"state step {key}")
            if self.controller.outputs.total > skipped:
                self._warn_non_finite(f"non-finite loss from the teacher at state step {key}: the last finite "
                                      f"loss is used")
            self._phi_cache = (key, phi)
        return self._phi_cache[1]

    # ---- fairseq hooks ---------------------------------------------------------------------------
    def build_model(self, cfg, from_checkpoint: bool = False):
        arch = getattr(cfg, "_name", None) or getattr(cfg, "arch", None) or ""
        if not arch.startswith(SUPPORTED_ARCH_PREFIXES) or arch.startswith("transformer_lm"):
            raise L2TConfigError(f"l2t_translation supports LSTM and Transformer encoder-decoders "
                             f"(--arch lstm*, transformer*), got --arch {arch}")
        return super().build_model(cfg, from_checkpoint)

    def begin_epoch(self, epoch, model):
        super().begin_epoch(epoch, model)
        if self.cfg.teacher_update_interval > 0:
            self._reward_data()  # fail at once, not hours later, when the reward subset is missing

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        if update_num != self._collecting_update:  # a new update: drop what an aborted one collected
            self._collecting_update = update_num
            self._update_samples, self._update_sums = [], torch.zeros(len(STATE_SUM_KEYS), dtype=torch.float64)
        if self._teacher_update_due(update_num):
            self._update_samples.append((sample, ignore_grad, rng_state(next(model.parameters()).device)))
            self._real_loss_is_teachers = isinstance(criterion, L2TDynamicCriterion)
        self._push_loss_params(criterion, model)
        loss, sample_size, logging_output = super().train_step(sample, model, criterion, optimizer, update_num,
                                                               ignore_grad)
        if not ignore_grad and isinstance(criterion, L2TDynamicCriterion):  # a dummy batch is no part of the update
            self._update_sums += torch.tensor([float(logging_output[k]) for k in STATE_SUM_KEYS], dtype=torch.float64)
        return loss, sample_size, logging_output

    def valid_step(self, sample, model, criterion):
        self._push_loss_params(criterion, model)
        return super().valid_step(sample, model, criterion)

    def _push_loss_params(self, criterion, model) -> None:
        """Hand the criterion the loss for the student's current state (fairseq's tasks push, criteria compute)."""
        if isinstance(criterion, L2TDynamicCriterion):  # other criteria (cross_entropy, ...) have a fixed loss
            criterion.set_loss_params(self.teacher, self._loss_params(next(model.parameters()).device))

    def optimizer_step(self, optimizer, model, update_num):
        """When due, the teacher learns from this update; then the update's statistics become one state step.

        The lookahead starts where this update's loss was set: from the current student, on this
        update's batches, with the state features that chose its loss.  A run that cannot recover
        stops here, before the student's step and before any checkpoint (an exception inside
        train_step would make fairseq save crash.pt with the poisoned teacher).
        """
        self._stop_if_unrecoverable()
        sums = self._update_sums
        if is_distributed():
            device = next(model.parameters()).device
            sums = all_reduce_sum([sums.to(device)])[0].cpu()
        if self._teacher_update_due(update_num) and update_num != self._last_teacher_update:
            self._last_teacher_update = update_num
            self._update_teacher(model, update_num)
            self._stop_if_unrecoverable()
        self.student_state.observe_sums(sums)
        self._collecting_update, self._update_samples = -1, []
        super().optimizer_step(optimizer, model, update_num)

    def _teacher_update_due(self, update_num: int) -> bool:
        interval = self.cfg.teacher_update_interval
        return interval > 0 and update_num % interval == 0

    def get_checkpoint_dict(self) -> dict:
        """The teacher's controller (teacher, optimizer, counters) and the running state, in fairseq's
        extra_state on every save."""
        return {self.__class__.__name__: {
            "controller": self.controller.state_dict(), "student_state": self.student_state.state_dict(),
            "last_teacher_update": self._last_teacher_update,
        }}

    def set_checkpoint_dict(self, state: dict) -> None:
        """Restore on resume (fairseq calls this from checkpoint_utils.load_checkpoint)."""
        if "controller" not in state:
            raise L2TConfigError(f"the checkpoint being resumed holds a teacher saved before the teacher checkpoint "
                                 f"schema {SCHEMA}: finish that run with the fairseq-l2t version that started it, or "
                                 f"start a new run (new --save-dir) with --teacher-init on that checkpoint to keep "
                                 f"its teacher")
        self._check_teacher_config(state["controller"]["teacher"]["config"], "the checkpoint being resumed")
        self.controller.load_state_dict(state["controller"])
        self.student_state.load_state_dict(state["student_state"])
        self._last_teacher_update = state["last_teacher_update"]
        self._phi_cache = None

    # ---- teacher updates -------------------------------------------------------------------------
    def _update_teacher(self, model, update_num: int) -> None:
        student_module = getattr(model, "module", model)
        device = next(student_module.parameters()).device
        self.teacher.to(device)
        batch, grad_sync, whole = self._lookahead_batch(device, update_num)
        rewards = self._reward_share(update_num, device)
        student = FunctionalStudent(student_module)
        unroll = Unroll(
            student=student, teacher=self.teacher, sgd=SGDConfig(self.cfg.lookahead_lr),
            steps=self.cfg.lookahead_steps, batch_at=lambda t: batch,
            dev_batches=[(reward["net_input"], reward["target"]) for reward in rewards],
            dev_objective=expected_bleu_dev_objective(self.tgt_dict.pad(), self.tgt_dict.eos(),
                                                      self.cfg.reward_max_order),
            tracker=self.student_state, ignore_index=self.tgt_dict.pad(), rng_seed=self.cfg.seed + update_num,
            grad_sync=grad_sync, dev_sync=all_reduce_sum if is_distributed() else None,
        )
        if self._engine != "one_step":
            result = hypergradient(unroll, student.snapshot(), engine=self._engine)
        elif self._reuses_real_step and self._real_loss_is_teachers:
            named = dict(student_module.named_parameters())
            direction = [torch.zeros_like(named[n]) if named[n].grad is None else named[n].grad
                         for n in student.param_names]
            replay = self._update_samples[0][2] if whole else None  # a part of the batch draws other masks
            result = one_step_hypergradient(unroll, student.snapshot(), direction, replay, self._tangent)
        else:
            result = one_step_hypergradient(unroll, student.snapshot(), tangent=self._tangent)
        if self.controller.step([result], f"update {update_num}"):
            self.student_state.observe_dev(min(max(1.0 - result.dev_objective, 0.0), 1.0))
        else:
            self._warn_non_finite(f"non-finite teacher hypergradient at update {update_num}: teacher update skipped")
        check_identical(list(self.teacher.parameters()), "teacher parameters")
        self._phi_cache = None
        metrics.log_scalar("teacher_reward", 1.0 - result.dev_objective, weight=1, round=4)
        metrics.log_scalar("teacher_updates", self.controller.updates, weight=0, round=0)
        metrics.log_scalar("teacher_skipped", self.controller.skipped, weight=0, round=0)
        with torch.no_grad():
            gates = self.teacher.gates(self.student_state.features(device=device))
        for i, g in enumerate(gates.tolist()):
            metrics.log_scalar(f"teacher_gate{i}", g, weight=1, round=3)

    def _warn_non_finite(self, what: str) -> None:
        skipped = self.controller.skipped
        metrics.log_scalar("teacher_skipped", skipped, weight=0, round=0)
        logger.warning(f"{what} ({skipped} non-finite so far)")

    def _stop_if_unrecoverable(self) -> None:
        try:
            self.controller.raise_if_exhausted(f"stopped without saving (--max-non-finite {self.cfg.max_non_finite}); "
                                               f"resume from the last checkpoint with a lower --teacher-lr or "
                                               f"--lookahead-lr")
        except NonFiniteStop as err:
            raise L2TNonFiniteError(str(err)) from None

    def _lookahead_batch(self, device: torch.device,
                         update_num: int) -> tuple[tuple[dict, torch.Tensor], Optional[Callable], bool]:
        """This update's micro-batches as one batch (or, with --lookahead-tokens, a random part of its
        sentences), the gradient sync that sums the ranks' shares, and whether it is the whole update.

        Each rank's lookahead loss is its token mean; weighting it by the rank's share of the
        lookahead's tokens makes the synced gradient that of the mean over every rank's tokens.
        """
        pad = self.tgt_dict.pad()
        real = [sample for sample, dummy, _ in self._update_samples if not dummy]
        sample = stack_micro_batches(real or [self._update_samples[0][0]], pad, self.cfg.left_pad_source,
                                     self.cfg.left_pad_target)
        sample, whole = sentences_within(sample, self.cfg.lookahead_tokens, pad, self.cfg.seed + update_num,
                                         self.cfg.left_pad_source, self.cfg.left_pad_target)
        if device.type == "cuda":
            sample = utils.move_to_cuda(sample, device=device)
        batch = (sample["net_input"], sample["target"])
        if not is_distributed():
            return batch, None, whole
        local = sample["target"].ne(pad).sum().double() if real else torch.zeros((), dtype=torch.float64,
                                                                                  device=device)
        share = (local / all_reduce_sum([local])[0]).item()
        return batch, lambda grads: all_reduce_sum([g * share for g in grads]), whole

    def _reward_share(self, update_num: int, device: torch.device) -> list[dict]:
        """This rank's reward batches for this teacher update: an equal share of --reward-batches."""
        batches = self._reward_data()
        per_update = self.cfg.reward_batches or world_size()
        first = (update_num // self.cfg.teacher_update_interval) * per_update
        mine = [batches[(first + i) % len(batches)] for i in range(rank(), per_update, world_size())]
        return [utils.move_to_cuda(b, device=device) for b in mine] if device.type == "cuda" else mine

    def _reward_data(self) -> list[dict]:
        """Teacher-forced reward batches of --reward-subset, in a fixed order (resume-safe)."""
        if self._reward_batches is None:
            subset = self.cfg.reward_subset
            if subset == "test" or subset.startswith("test"):
                raise L2TConfigError(f"--reward-subset {subset}: the teacher must never see the test set; use valid")
            empty = L2TConfigError(f"--reward-subset {subset} has no sentences; the reward needs a non-empty dev set")
            try:
                self.load_dataset(subset)
            except FileNotFoundError as err:
                raise L2TConfigError(f"--reward-subset {subset} not found in {self.cfg.data} ({err}); binarise a dev "
                                     f"split with fairseq-preprocess --validpref or name another subset") from None
            except ValueError as err:  # fairseq cannot even open an empty binarised split
                if "empty file" not in str(err):
                    raise
                raise empty from None
            dataset = self.dataset(subset)
            if len(dataset) == 0:
                raise empty
            # disable_iterator_cache: fairseq caches one iterator per dataset, so sharing it with validation
            # would make the reward batches depend on whether validation ran first (and break exact resume)
            iterator = self.get_batch_iterator(dataset, max_sentences=self.cfg.reward_max_sentences,
                                               seed=self.cfg.seed, ignore_invalid_inputs=True,
                                               disable_iterator_cache=True)
            self._reward_batches = list(iterator.next_epoch_itr(shuffle=False))
        return self._reward_batches

    def _load_teacher(self, path: str) -> None:
        if not Path(path).is_file():
            raise L2TConfigError(f"--teacher-init {path} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except UNREADABLE as err:
            raise L2TConfigError(f"--teacher-init {path} cannot be read ({type(err).__name__}): it is truncated or "
                                 f"corrupt; pass an intact l2t_translation checkpoint") from None
        saved = state.get("extra_state", {}).get(self.__class__.__name__) if isinstance(state, dict) else None
        if saved is None:
            raise L2TConfigError(f"--teacher-init {path} holds no l2t_translation teacher (train one with "
                             f"--task l2t_translation first)")
        # schema 2 (the controller's state) or, from checkpoints written before it, the teacher's own keys
        payload = saved["controller"]["teacher"] if "controller" in saved else {"config": saved["teacher_config"],
                                                                                "state": saved["teacher"]}
        self._check_teacher_config(payload["config"], path)
        if not all_finite(payload["state"].values()):
            raise L2TConfigError(f"--teacher-init {path} holds a teacher with non-finite parameters; start from an "
                                 f"earlier checkpoint of that run")
        self.teacher.load_state_dict(payload["state"])

    def _check_teacher_config(self, config: dict, source: str) -> None:
        mismatch = teacher_mismatch(config, len(self.tgt_dict), self.student_state.num_features, self.teacher_spec,
                                    ("target types", "this dictionary"))
        if mismatch is not None:
            raise L2TConfigError(f"the teacher in {source} {mismatch}; use that run's fairseq-preprocess dictionary "
                                 f"and --teacher-* options, or train a new teacher")
