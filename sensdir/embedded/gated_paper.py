"""Gated SAE trained with the loss of Rajamanoharan et al. 2024 ([R24], METHODS §8).

The model is sae_lens's gated SAE, unchanged: the same parameters (``W_enc`` = W_gate,
``r_mag``, ``b_gate``, ``b_mag``, ``W_dec``, ``b_dec``), the same forward pass, and it is saved
with ``save_inference_model`` as architecture ``"gated"`` -- ``SAE.load_from_disk`` returns a
plain ``sae_lens.GatedSAE``. Only the *training* differs from sae_lens's ``GatedTrainingSAE``:

Forward (sae_lens's, identical to METHODS §8; ``W_enc`` is [d_in, d_sae], ``W_dec`` [d_sae, d_in])::

    pi    = (x - b_dec) @ W_enc + b_gate                               # W_gate (x - b_dec) + b_gate
    f     = 1[pi > 0] * ReLU((x - b_dec) @ (W_enc * exp(r_mag)) + b_mag)
    x_hat = f @ W_dec + b_dec

Loss (the paper's)::

    ||x - x_hat||^2 + lambda * ||ReLU(pi)||_1 + ||x - (ReLU(pi) @ W_dec.detach() + b_dec.detach())||^2

* the auxiliary reconstruction uses a frozen copy of the decoder (``W_dec``, ``b_dec``
  detached), so it trains only the gate path; ``b_dec`` still gets the gradient that flows
  through the input centring ``x - b_dec`` inside ``pi`` (as in the paper's pseudo-code, where
  only the decoder is stop-gradient'ed);
* the sparsity penalty is the plain L1 norm of ``ReLU(pi)`` (no decoder-norm weighting);
* the decoder rows are constrained to unit norm: the gradient component parallel to each row
  is removed (a gradient hook on ``W_dec``, applied before sae_lens's gradient clipping and
  the Adam step), and the rows are renormalised after every optimizer step
  (:func:`attach`, an optimizer step post-hook) and at the start of every training forward pass.

sae_lens's ``GatedTrainingSAE`` differs (checked in sae_lens 6.54.12): its auxiliary term uses
the live ``W_dec``/``b_dec``, its penalty is ``sum_i ReLU(pi_i) * ||W_dec,i||``, and it does not
constrain the decoder norms.

Everything else -- ``SAETrainer`` (Adam, lr schedule, L1 warm-up, gradient clipping at norm 1),
input scaling and its folding into the weights, saving -- is sae_lens's, so the paper-loss SAEs
are trained at exactly the settings of the rest of the embedded family.

Note: the input-norm scaling factor s (inputs scaled to mean norm sqrt(d_in) in training) is
folded into the weights at the end of ``SAETrainer.fit`` (``W_dec /= s``), so the *shipped*
decoder rows have norm 1/s, not 1; the unit-norm constraint holds in the scaled training space.
"""

from __future__ import annotations

from typing import Any

import torch
from sae_lens import GatedTrainingSAE, GatedTrainingSAEConfig
from sae_lens.saes.sae import TrainStepInput, TrainStepOutput

LOSS_NOTE = (
    "paper loss (Rajamanoharan et al. 2024, METHODS §8): MSE + l1 * ||ReLU(pi_gate)||_1 + "
    "||x - (ReLU(pi_gate) @ W_dec.detach() + b_dec.detach())||^2; decoder rows unit norm in "
    "training (gradient parallel to the rows removed, rows renormalised after every step); "
    "sensdir.embedded.gated_paper.PaperGatedTrainingSAE"
)


def paper_gated_losses(sae: GatedTrainingSAE, x: torch.Tensor, l1_coefficient: float) -> dict[str, torch.Tensor]:
    """The three terms of the paper's loss for a batch ``x`` (already scaled), each a mean over
    the batch of a per-row sum: ``mse_loss``, ``l1_loss``, ``auxiliary_reconstruction_loss``."""
    feature_acts, _ = sae.encode_with_hidden_pre(x)
    x_hat = sae.decode(feature_acts)
    mse = (x_hat - x).pow(2).sum(-1).mean()
    aux = paper_aux_losses(sae, x, l1_coefficient)
    return {"mse_loss": mse, **aux}


def paper_aux_losses(sae: GatedTrainingSAE, x: torch.Tensor, l1_coefficient: float) -> dict[str, torch.Tensor]:
    """Sparsity and frozen-decoder auxiliary terms of the paper's loss."""
    x_centred = x - sae.b_dec * sae.cfg.apply_b_dec_to_input
    pi_gate = x_centred @ sae.W_enc + sae.b_gate
    gate = torch.relu(pi_gate)
    l1 = l1_coefficient * gate.sum(-1).mean()
    via_gate = gate @ sae.W_dec.detach() + sae.b_dec.detach()
    aux = (via_gate - x).pow(2).sum(-1).mean()
    return {"l1_loss": l1, "auxiliary_reconstruction_loss": aux}


class PaperGatedTrainingSAE(GatedTrainingSAE):
    """sae_lens's gated training SAE with the paper's loss and unit-norm decoder rows.

    Use with ``SAETrainer``; call :func:`attach` on the trainer so the rows are renormalised
    right after every optimizer step (without it they are renormalised at the start of the next
    training forward pass only, so the final step's update is left unnormalised)."""

    def __init__(self, cfg: GatedTrainingSAEConfig, use_error_term: bool = False):
        super().__init__(cfg, use_error_term)
        self.cfg.metadata.sensdir_loss = "paper"
        self.normalize_decoder()
        self.W_dec.register_hook(self._project_out_parallel)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec.data /= self.W_dec.data.norm(dim=-1, keepdim=True).clamp(min=1e-8)

    def _project_out_parallel(self, grad: torch.Tensor) -> torch.Tensor:
        # remove, per decoder row, the gradient component parallel to the row (rows unit norm)
        w = self.W_dec.detach()
        w = w / w.norm(dim=-1, keepdim=True).clamp(min=1e-8)
        return grad - (grad * w).sum(-1, keepdim=True) * w

    def calculate_aux_loss(
        self,
        step_input: TrainStepInput,
        feature_acts: torch.Tensor,
        hidden_pre: torch.Tensor,
        sae_out: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        return paper_aux_losses(self, step_input.sae_in, step_input.coefficients["l1"])

    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        if self.training:
            self.normalize_decoder()
        return super().training_forward_pass(step_input)


def attach(trainer: Any) -> None:
    """Renormalise the decoder rows of ``trainer.sae`` after every optimizer step."""
    sae = trainer.sae
    if not isinstance(sae, PaperGatedTrainingSAE):
        raise TypeError("attach() expects a trainer of a PaperGatedTrainingSAE")
    trainer.optimizer.register_step_post_hook(lambda opt, args, kwargs: sae.normalize_decoder())
