"""The ``PtychoK3`` settings group ptychodus shows and saves (``[PtychoK3]`` in settings.ini)."""

from __future__ import annotations

from typing import Any

#: Backends a child process may run under (``KERAS_BACKEND``).
BACKENDS = ("tensorflow", "torch", "jax")


class PtychoK3Settings:
    """The options beamline users set; each is read when a run starts.

    Backend (tensorflow | torch | jax), GridSize, NumEpochs, BatchSize, NumGroups (0 = the
    command's default), NumPhotons (0 = from the data: mean counts per pattern), Seed,
    RefineIterations (PINN-Refined), Iterations (Iterative), RefineProbe, RefinePositions,
    TrainArguments (further ptycho-train flags, split like a shell line, e.g.
    ``--n_filters_scale 1``) and ReconstructArguments (further ptycho-infer /
    ptycho-reconstruct flags, e.g. ``--n_groups 256``).
    """

    def __init__(self, registry: Any) -> None:
        g = registry.create_group("PtychoK3")
        self.group = g
        self.backend = g.create_string_parameter("Backend", "torch")
        self.gridsize = g.create_integer_parameter("GridSize", 1, minimum=1, maximum=4)
        self.nepochs = g.create_integer_parameter("NumEpochs", 50, minimum=1)
        self.batch_size = g.create_integer_parameter("BatchSize", 16, minimum=1)
        self.n_groups = g.create_integer_parameter("NumGroups", 0, minimum=0)
        self.nphotons = g.create_real_parameter("NumPhotons", 0.0, minimum=0.0)
        self.seed = g.create_integer_parameter("Seed", 0, minimum=0)
        self.refine_iterations = g.create_integer_parameter("RefineIterations", 20, minimum=1)
        self.iterations = g.create_integer_parameter("Iterations", 50, minimum=1)
        self.refine_probe = g.create_boolean_parameter("RefineProbe", False)
        self.refine_positions = g.create_boolean_parameter("RefinePositions", False)
        self.train_arguments = g.create_string_parameter("TrainArguments", "")
        self.reconstruct_arguments = g.create_string_parameter("ReconstructArguments", "")

    def backend_name(self) -> str:
        """The backend, checked (ValueError naming the setting otherwise)."""
        value = self.backend.get_value().strip().lower()
        value = "torch" if value == "pytorch" else value
        if value not in BACKENDS:
            raise ValueError(f"[PtychoK3] Backend must be one of {BACKENDS}, got {value!r}")
        return value

    def extra(self, training: bool) -> list[str]:
        """TrainArguments (``training``) or ReconstructArguments, split like a shell line."""
        import shlex

        p = self.train_arguments if training else self.reconstruct_arguments
        return shlex.split(p.get_value())
