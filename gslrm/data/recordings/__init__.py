"""Raw rig recordings (videos + calibration in the MAMMAL, anipose and DANNCE layouts) to the trainer's format."""
