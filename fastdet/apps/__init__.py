"""Applications above the tasks: the demo (synthetic data -> train -> evaluate -> report, with
its chest section: lungs -> classifier -> gated detector)."""
