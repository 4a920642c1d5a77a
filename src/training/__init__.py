"""Lightning and Hydra glue: the LightningModule, optimizer, callbacks, checkpoints, loggers,
DDP launch, typed configs and console output."""
