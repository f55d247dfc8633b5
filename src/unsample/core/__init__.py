"""Core: schedules, prediction conversions and the Denoiser adapter. No diffusers here."""
