"""Host-free decision logic: consistency timesteps, rollback sigmas, budgets, gating.

Plain torch/numpy; never imports ComfyUI, so every decision is unit-testable on its own."""
