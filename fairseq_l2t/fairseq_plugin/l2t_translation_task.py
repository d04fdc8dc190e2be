"""`--task l2t_translation`: translation whose loss is set by a learning teacher.

Every --teacher-update-interval updates, before the student's own step, the
task looks --lookahead-steps differentiable SGD steps ahead from the current
student on the current training batch, scores the expected-BLEU surrogate on
a teacher-forced batch of the reward subset (default `valid`; never the test
set), and takes one step of the teacher's own optimizer on the exact
hypergradient.  The student's optimizer never sees the teacher's parameters.

Design decisions (documented, not from the paper): the lookahead uses plain
SGD with --lookahead-lr whatever optimizer trains the student (differentiating
through Adam is out of scope); W is diagonal + low rank over the target
vocabulary; state progress is batches seen / --teacher-horizon (default --max-update, or
100k when no --max-update is set).  Configuration mistakes raise
L2TConfigError, printed by fairseq-train as one line.
"""

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from fairseq import metrics, utils
from fairseq.dataclass import ChoiceEnum
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask
from omegaconf import II

from ..expected_bleu import expected_bleu_dev_objective
from ..functional_student import FunctionalStudent, SGDConfig
from ..hypergradient import Unroll, hypergradient
from ..loss_structures import DiagLowRankStructure
from ..state_features import StudentState
from ..teacher import Teacher
from .errors import L2TConfigError

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
    teacher_lr: float = field(default=1e-3, metadata={"help": "learning rate of the teacher's optimizer"})
    teacher_optimizer: ChoiceEnum(["adam", "sgd"]) = field(
        default="adam", metadata={"help": "the teacher's own optimizer"})
    teacher_max_grad_norm: float = field(
        default=1.0, metadata={"help": "clip the teacher's hypergradient norm (0: no clipping)"})
    teacher_rank: int = field(default=8, metadata={"help": "rank r of W = diag(d) + U V^T over the vocabulary"})
    teacher_gates: int = field(default=2, metadata={"help": "state-dependent gates of the teacher"})
    teacher_squash: bool = field(
        default=False, metadata={"help": "use the paper's -sigmoid(z) loss instead of -z (CE at init)"})
    teacher_init: Optional[str] = field(
        default=None, metadata={"help": "start from the teacher saved in this l2t_translation checkpoint"})
    teacher_horizon: int = field(
        default=0, metadata={"help": "updates that count as the whole run for the progress feature "
                                     "(0: --max-update, or 100k without one)"})
    reward_subset: str = field(
        default="valid", metadata={"help": "data subset whose teacher-forced expected BLEU is the reward"})
    reward_max_sentences: int = field(default=32, metadata={"help": "sentences per reward batch"})
    reward_max_order: int = field(default=4, metadata={"help": "max n-gram order of the expected-BLEU reward"})
    seed: int = II("common.seed")
    max_update: int = II("optimization.max_update")


@register_task("l2t_translation", dataclass=L2TTranslationConfig)
class L2TTranslationTask(TranslationTask):
    cfg: L2TTranslationConfig

    def __init__(self, cfg: L2TTranslationConfig, src_dict, tgt_dict):
        super().__init__(cfg, src_dict, tgt_dict)
        for name in ("lookahead_steps", "teacher_rank", "teacher_gates", "reward_max_sentences", "reward_max_order"):
            if getattr(cfg, name) < 1:
                raise L2TConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
        for name in ("lookahead_lr", "teacher_lr"):
            if not (getattr(cfg, name) > 0 and math.isfinite(getattr(cfg, name))):
                raise L2TConfigError(f"--{name.replace('_', '-')} must be a positive number, got {getattr(cfg, name)}")
        if cfg.teacher_horizon < 0:
            raise L2TConfigError(f"--teacher-horizon must be >= 0, got {cfg.teacher_horizon}")
        if cfg.teacher_update_interval < 0:
            raise L2TConfigError(f"--teacher-update-interval must be >= 0, got {cfg.teacher_update_interval}")
        horizon = cfg.teacher_horizon or (cfg.max_update if cfg.max_update and cfg.max_update > 0 else DEFAULT_HORIZON)
        self.student_state = StudentState(len(tgt_dict), total_steps=horizon, ignore_index=tgt_dict.pad())
        self.teacher = Teacher(DiagLowRankStructure(len(tgt_dict), cfg.teacher_rank, seed=cfg.seed),
                               self.student_state.num_features, cfg.teacher_gates, cfg.teacher_squash,
                               self.student_state.feature_names)
        if cfg.teacher_init:
            self._load_teacher(cfg.teacher_init)
        self.teacher_optimizer = (torch.optim.Adam if cfg.teacher_optimizer == "adam" else torch.optim.SGD)(
            self.teacher.parameters(), lr=cfg.teacher_lr)
        self.teacher_updates = 0
        self.teacher_skipped_non_finite = 0
        self._last_teacher_update = -1
        self._reward_batches: list[dict] | None = None
        self._phi_cache: tuple[int, dict] | None = None

    # ---- the teacher's view of the student -------------------------------------------------------
    def current_loss_params(self, device: torch.device) -> dict:
        """phi_t for the student's current state (no gradient: the student's loss never trains the teacher)."""
        key = self.student_state.step
        if self._phi_cache is None or self._phi_cache[0] != key:
            self.teacher.to(device)
            with torch.no_grad():
                self._phi_cache = (key, self.teacher(self.student_state.features(device=device)))
        return self._phi_cache[1]

    def observe_train_batch(self, lprobs: torch.Tensor, target: torch.Tensor) -> None:
        self.student_state.observe_batch(lprobs, target)

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
        interval = self.cfg.teacher_update_interval
        if interval > 0 and not ignore_grad and update_num % interval == 0 and update_num != self._last_teacher_update:
            self._last_teacher_update = update_num
            self._update_teacher(sample, model, update_num)
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def get_checkpoint_dict(self) -> dict:
        """Teacher, its optimizer and the running state, stored in fairseq's extra_state on every save."""
        return {self.__class__.__name__: {
            "teacher_config": self.teacher.config(), "teacher": self.teacher.state_dict(),
            "teacher_optimizer": self.teacher_optimizer.state_dict(), "student_state": self.student_state.state_dict(),
            "teacher_updates": self.teacher_updates, "teacher_skipped_non_finite": self.teacher_skipped_non_finite,
            "last_teacher_update": self._last_teacher_update,
        }}

    def set_checkpoint_dict(self, state: dict) -> None:
        """Restore on resume (fairseq calls this from checkpoint_utils.load_checkpoint)."""
        self._check_teacher_config(state["teacher_config"], "the checkpoint being resumed")
        self.teacher.load_state_dict(state["teacher"])
        self.teacher_optimizer.load_state_dict(state["teacher_optimizer"])
        self.student_state.load_state_dict(state["student_state"])
        self.teacher_updates = state["teacher_updates"]
        self.teacher_skipped_non_finite = state["teacher_skipped_non_finite"]
        self._last_teacher_update = state["last_teacher_update"]
        self._phi_cache = None

    # ---- teacher updates -------------------------------------------------------------------------
    def _update_teacher(self, sample, model, update_num: int) -> None:
        student_module = getattr(model, "module", model)
        device = next(student_module.parameters()).device
        self.teacher.to(device)
        reward_batches = self._reward_data()
        reward = reward_batches[(update_num // self.cfg.teacher_update_interval) % len(reward_batches)]
        if device.type == "cuda":
            reward = utils.move_to_cuda(reward, device=device)
        student = FunctionalStudent(student_module)
        batch = (sample["net_input"], sample["target"])
        unroll = Unroll(
            student=student, teacher=self.teacher, sgd=SGDConfig(self.cfg.lookahead_lr),
            steps=self.cfg.lookahead_steps, batch_at=lambda t: batch,
            dev_batches=[(reward["net_input"], reward["target"])],
            dev_objective=expected_bleu_dev_objective(self.tgt_dict.pad(), self.tgt_dict.eos(),
                                                      self.cfg.reward_max_order),
            tracker=self.student_state, ignore_index=self.tgt_dict.pad(), rng_seed=self.cfg.seed + update_num,
        )
        result = hypergradient(unroll, student.snapshot(), engine="stored")
        if result.is_finite():
            self.teacher_optimizer.zero_grad(set_to_none=True)
            result.accumulate_into(self.teacher)
            if self.cfg.teacher_max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(self.teacher.parameters(), self.cfg.teacher_max_grad_norm)
            self.teacher_optimizer.step()
            self.teacher_updates += 1
            self.student_state.observe_dev(min(max(1.0 - result.dev_objective, 0.0), 1.0))
        else:
            self.teacher_skipped_non_finite += 1
            logger.warning(f"non-finite teacher hypergradient at update {update_num}: teacher update skipped "
                           f"({self.teacher_skipped_non_finite} so far)")
        self._phi_cache = None
        metrics.log_scalar("teacher_reward", 1.0 - result.dev_objective, weight=1, round=4)
        metrics.log_scalar("teacher_updates", self.teacher_updates, weight=0, round=0)
        metrics.log_scalar("teacher_skipped", self.teacher_skipped_non_finite, weight=0, round=0)
        with torch.no_grad():
            gates = self.teacher.gates(self.student_state.features(device=device))
        for i, g in enumerate(gates.tolist()):
            metrics.log_scalar(f"teacher_gate{i}", g, weight=1, round=3)

    def _reward_data(self) -> list[dict]:
        """Teacher-forced reward batches of --reward-subset, in a fixed order (resume-safe)."""
        if self._reward_batches is None:
            subset = self.cfg.reward_subset
            if subset == "test" or subset.startswith("test"):
                raise L2TConfigError(f"--reward-subset {subset}: the teacher must never see the test set; use valid")
            try:
                self.load_dataset(subset)
            except FileNotFoundError as err:
                raise L2TConfigError(f"--reward-subset {subset} not found in {self.cfg.data} ({err}); binarise a dev "
                                 f"split with fairseq-preprocess --validpref or name another subset") from None
            dataset = self.dataset(subset)
            if len(dataset) == 0:
                raise L2TConfigError(f"--reward-subset {subset} has no sentences; the reward needs a non-empty dev set")
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
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved = state.get("extra_state", {}).get(self.__class__.__name__)
        if saved is None:
            raise L2TConfigError(f"--teacher-init {path} holds no l2t_translation teacher (train one with "
                             f"--task l2t_translation first)")
        self._check_teacher_config(saved["teacher_config"], path)
        self.teacher.load_state_dict(saved["teacher"])

    def _check_teacher_config(self, config: dict, source: str) -> None:
        mine = self.teacher.config()
        theirs_classes = config["structure"]["num_classes"]
        if theirs_classes != len(self.tgt_dict):
            raise L2TConfigError(f"the teacher in {source} was trained for a target vocabulary of {theirs_classes} "
                             f"types but this dictionary has {len(self.tgt_dict)}; use the same fairseq-preprocess "
                             f"dictionary or train a new teacher")
        for key in ("num_features", "num_gates", "squash"):
            if config[key] != mine[key]:
                raise L2TConfigError(f"the teacher in {source} has {key}={config[key]} but this run asks for "
                                 f"{mine[key]}; match --teacher-gates/--teacher-squash to that run")
        if config["structure"] != mine["structure"]:
            raise L2TConfigError(f"the teacher in {source} uses loss structure {config['structure']} but this run asks "
                             f"for {mine['structure']}; match --teacher-rank and --seed to that run")
