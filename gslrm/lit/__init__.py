"""Lightning glue: the training module, optimizer/schedule, callbacks and the DDP x Hydra-multirun launch fix."""
