"""FPN experiment framework: Feature Pyramid Networks (Lin et al., CVPR 2017) on Lightning + Hydra."""

import os

from omegaconf import OmegaConf

# ${cwd:} is the folder a command was started in (conf/paths). Hydra's ${hydra:runtime.cwd}
# cannot serve there: the multirun sweeper resolves hydra.sweep.dir before HydraConfig exists.
OmegaConf.register_new_resolver("cwd", os.getcwd, replace=True)
