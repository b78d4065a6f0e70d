"""A whole recording in 3D: ``python predict.py`` reconstructs every frame of a session into a sequence store in the
rig's own frame and units (``docs/predict.md``). Modules: ``world`` (normalized <-> rig frame), ``frames`` (which
frames, in what order, which worker), ``store`` (the zarr sequence store), ``predictor`` (Lightning's predict loop,
the writer, progress and SIGUSR2)."""
