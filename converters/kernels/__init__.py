"""Hand-written GPU kernels (Triton). Imported on demand: `import converters` never loads triton."""
