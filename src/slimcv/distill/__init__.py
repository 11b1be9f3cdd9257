"""Knowledge distillation: losses (kd, cwd, dkd, dist, feature), online or offline (cached) teacher."""
from slimcv.distill.losses import KD_LOSSES, list_kd_losses

__all__ = ["KD_LOSSES", "list_kd_losses"]
