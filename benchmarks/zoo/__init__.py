"""The reproduction zoo: real-image classification tasks, fine-tuned experts, ground truth.

Run the whole pipeline with ``python -m benchmarks.reproduce --config small``; the
modules here are its stages (``data`` -> ``tasks`` -> ``experts`` -> ``groundtruth``
-> ``selection``) and ``demo`` builds the committed demo hub ``examples/zoo``.
"""
