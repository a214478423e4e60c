"""Getting things out of a trained run: renders, camera paths and videos."""
