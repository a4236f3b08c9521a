"""Many configurations at once: the measured profile of a device (profile), the grid's expected time and disk
(plan), several workers per device (packing), the shared grid on an Optuna study (worker) and cluster submission."""
